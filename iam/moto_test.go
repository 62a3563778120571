package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

const motoRegion = "us-east-1"

func iamClient(url, id, secret string) *awsiam.Client {
	return awsiam.New(awsiam.Options{
		Region:       motoRegion,
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(id, secret, ""),
	})
}

func ec2Client(url, id, secret string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       motoRegion,
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(id, secret, ""),
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// motoOptions returns policy options for the worker around profile.
func motoOptions(account string, prof InstanceProfile, ami, sg, subnet string) PolicyOptions {
	return PolicyOptions{
		Region:             motoRegion,
		AccountID:          account,
		AMIs:               []string{ami},
		InstanceTypes:      []string{"t3.small"},
		KeyPair:            "latentworker-w1",
		SecurityGroupID:    sg,
		SubnetID:           subnet,
		InstanceProfileARN: prof.ARN,
		RoleARN:            prof.RoleARN,
		Tags:               map[string]string{fleet.TagWorker: "w1"},
	}
}

func accountOf(t *testing.T, arn string) string {
	t.Helper()
	f := strings.Split(arn, ":")
	if len(f) < 5 {
		t.Fatalf("ARN %q", arn)
	}
	return f[4]
}

func TestLifecycleMoto(t *testing.T) {
	url := mototest.Start(t)
	ctx := testContext(t)
	api := iamClient(url, "AKIDADMIN", "admin-secret")
	m := NewManager(api)

	// EnsureUser is idempotent and tags the user.
	u1, err := m.EnsureUser(ctx, "w1")
	if err != nil {
		t.Fatalf("EnsureUser(w1) error: %v", err)
	}
	u2, err := m.EnsureUser(ctx, "w1")
	if err != nil {
		t.Fatalf("EnsureUser(w1) again: %v", err)
	}
	if u1 != u2 || u1.Name != "latentworker-w1" || u1.Path != DefaultPath || !strings.Contains(u1.ARN, ":user/latentworker/latentworker-w1") {
		t.Errorf("EnsureUser(w1) = %+v then %+v", u1, u2)
	}
	tags, err := api.ListUserTags(ctx, &awsiam.ListUserTagsInput{UserName: aws.String(u1.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := tagValue(tags.Tags, fleet.TagWorker); v != "w1" {
		t.Errorf("user tags = %v; want %s=w1", tags.Tags, fleet.TagWorker)
	}

	// A user of the same name outside our path is never adopted.
	if _, err := api.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String(Name("other"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureUser(ctx, "other"); !errors.Is(err, ErrForeign) {
		t.Errorf("EnsureUser(other) error = %v; want ErrForeign", err)
	}
	if _, err := m.EnsureUser(ctx, "bad name!"); err == nil {
		t.Error("EnsureUser(bad name!) error = nil")
	}

	// EnsureInstanceProfile is idempotent.
	p1, err := m.EnsureInstanceProfile(ctx, "w1")
	if err != nil {
		t.Fatalf("EnsureInstanceProfile(w1): %v", err)
	}
	p2, err := m.EnsureInstanceProfile(ctx, "w1")
	if err != nil {
		t.Fatalf("EnsureInstanceProfile(w1) again: %v", err)
	}
	if p1 != p2 || !strings.HasSuffix(p1.ARN, ":instance-profile/latentworker/latentworker-w1") || !strings.HasSuffix(p1.RoleARN, ":role/latentworker/latentworker-w1") {
		t.Errorf("EnsureInstanceProfile(w1) = %+v then %+v", p1, p2)
	}
	prof, err := api.GetInstanceProfile(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(p1.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(prof.InstanceProfile.Roles); n != 1 {
		t.Errorf("instance profile has %d roles; want 1", n)
	}
	// The role has no permissions.
	rp, err := api.ListAttachedRolePolicies(ctx, &awsiam.ListAttachedRolePoliciesInput{RoleName: aws.String(p1.RoleName)})
	if err != nil || len(rp.AttachedPolicies) != 0 {
		t.Errorf("role policies = %v, %v; want none", rp, err)
	}

	// A profile of the worker's name holding another role is refused.
	trust, _ := EC2TrustPolicy("aws").JSON()
	if _, err := api.CreateRole(ctx, &awsiam.CreateRoleInput{RoleName: aws.String("someone-else"), AssumeRolePolicyDocument: aws.String(string(trust))}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreateInstanceProfile(ctx, &awsiam.CreateInstanceProfileInput{InstanceProfileName: aws.String(Name("w2")), Path: aws.String(DefaultPath)}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.AddRoleToInstanceProfile(ctx, &awsiam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(Name("w2")), RoleName: aws.String("someone-else")}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureInstanceProfile(ctx, "w2"); !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "someone-else") {
		t.Errorf("EnsureInstanceProfile(w2) error = %v; want ErrForeign naming someone-else", err)
	}

	// PutPolicy writes once, then only on change.
	o := motoOptions(accountOf(t, u1.ARN), p1, "ami-0123456789abcdef0", "sg-0123456789abcdef0", "subnet-0123456789abcdef0")
	doc, err := WorkerPolicy(o)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		changed, err := m.PutPolicy(ctx, u1, doc)
		if err != nil {
			t.Fatalf("PutPolicy #%d: %v", i, err)
		}
		if changed != want {
			t.Errorf("PutPolicy #%d changed = %v; want %v", i, changed, want)
		}
	}
	// A refresh moves the policy to a new AMI; six refreshes exercise the
	// five-version limit.
	for i := range 6 {
		o.AMIs = []string{fmt.Sprintf("ami-%017x", i+1)}
		d, err := WorkerPolicy(o)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := m.PutPolicy(ctx, u1, d); err != nil || !changed {
			t.Fatalf("PutPolicy(refresh %d) = %v, %v; want true, nil", i, changed, err)
		}
		doc = d
	}
	arn, _ := m.policyARN(u1)
	got, err := m.Policy(ctx, u1)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := doc.JSON()
	if gotJSON, _ := got.JSON(); !sameDocument(gotJSON, want) {
		t.Errorf("Policy() = %s; want %s", gotJSON, want)
	}
	att, err := api.ListAttachedUserPolicies(ctx, &awsiam.ListAttachedUserPoliciesInput{UserName: aws.String(u1.Name)})
	if err != nil || len(att.AttachedPolicies) != 1 || aws.ToString(att.AttachedPolicies[0].PolicyArn) != arn {
		t.Errorf("attached policies = %+v, %v; want only %s", att, err, arn)
	}

	// Keys: none to rotate, create, rotate, both slots full, retire.
	if _, err := m.Rotate(ctx, u1); !errors.Is(err, ErrNoKey) {
		t.Errorf("Rotate without keys: error = %v; want ErrNoKey", err)
	}
	k1, err := m.CreateKey(ctx, u1)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	secret := k1.Secret.Reveal()
	if k1.ID == "" || secret == "" {
		t.Fatalf("CreateKey = %+v; want an ID and a secret", k1)
	}
	js, _ := json.Marshal(k1)
	for _, s := range []string{fmt.Sprint(k1), fmt.Sprintf("%+v", k1), fmt.Sprintf("%#v", k1), string(js)} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret leaks when printed: %s", s)
		}
	}
	if _, err := m.RetireOld(ctx, u1, ""); !errors.Is(err, ErrNoKey) {
		t.Errorf("RetireOld with one key: error = %v; want ErrNoKey", err)
	}
	rot, err := m.Rotate(ctx, u1)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if rot.Old.ID != k1.ID || rot.New.ID == k1.ID || rot.New.Secret.IsZero() {
		t.Errorf("Rotate = old %s new %s; want old %s and a new key", rot.Old.ID, rot.New.ID, k1.ID)
	}
	keys, err := m.Keys(ctx, u1)
	if err != nil || len(keys) != 2 {
		t.Fatalf("Keys after Rotate = %v, %v; want 2", keys, err)
	}
	for _, k := range keys {
		if k.Status != "Active" {
			t.Errorf("key %s is %s after Rotate; want both active", k.ID, k.Status)
		}
	}
	_, err = m.CreateKey(ctx, u1)
	var full *KeySlotsFullError
	if !errors.As(err, &full) || !errors.Is(err, ErrKeySlotsFull) {
		t.Fatalf("CreateKey with two keys: error = %v; want *KeySlotsFullError", err)
	}
	for _, id := range []string{k1.ID, rot.New.ID} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("two-key error %q does not name key %s", err, id)
		}
	}
	if !strings.Contains(err.Error(), "--retire-old") || !strings.Contains(err.Error(), "2 access keys") {
		t.Errorf("two-key error %q does not say what to do", err)
	}
	t.Logf("two-key message: %v", err)
	if _, err := m.Rotate(ctx, u1); !errors.Is(err, ErrKeySlotsFull) {
		t.Errorf("Rotate with two keys: error = %v; want ErrKeySlotsFull", err)
	}
	if _, err := m.RetireOld(ctx, u1, "AKIANOSUCHKEY0000000"); err == nil {
		t.Error("RetireOld(unknown keep) error = nil")
	}
	deleted, err := m.RetireOld(ctx, u1, rot.New.ID)
	if err != nil || len(deleted) != 1 || deleted[0].ID != k1.ID {
		t.Fatalf("RetireOld = %v, %v; want [%s]", deleted, err, k1.ID)
	}
	keys, _ = m.Keys(ctx, u1)
	if len(keys) != 1 || keys[0].ID != rot.New.ID {
		t.Errorf("Keys after RetireOld = %v; want only %s", keys, rot.New.ID)
	}
}

// TestEnforcementMoto turns moto's IAM enforcement on and calls EC2 and IAM
// with the worker's key. moto checks actions only (LAB-NOTES), so the
// assertions are made with the ActionLevel projection of the policy; the
// fully scoped policy's results are logged, to record what moto does.
func TestEnforcementMoto(t *testing.T) {
	url := mototest.Start(t)
	ctx := testContext(t)

	// An administrator, made before enforcement, to keep working after.
	boot := iamClient(url, "AKIDBOOT", "boot-secret")
	if _, err := boot.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String("admin")}); err != nil {
		t.Fatal(err)
	}
	all := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`
	if _, err := boot.PutUserPolicy(ctx, &awsiam.PutUserPolicyInput{UserName: aws.String("admin"), PolicyName: aws.String("all"), PolicyDocument: aws.String(all)}); err != nil {
		t.Fatal(err)
	}
	ak, err := boot.CreateAccessKey(ctx, &awsiam.CreateAccessKeyInput{UserName: aws.String("admin")})
	if err != nil {
		t.Fatal(err)
	}
	adminID, adminSecret := aws.ToString(ak.AccessKey.AccessKeyId), aws.ToString(ak.AccessKey.SecretAccessKey)
	adminIAM, adminEC2 := iamClient(url, adminID, adminSecret), ec2Client(url, adminID, adminSecret)

	// What handoff prepares: the key pair, the security group, the user,
	// the profile, the policy, the key.
	if _, err := adminEC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("latentworker-w1")}); err != nil {
		t.Fatal(err)
	}
	subnets, err := adminEC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}})
	if err != nil || len(subnets.Subnets) == 0 {
		t.Fatalf("no default subnet: %v", err)
	}
	subnet := subnets.Subnets[0]
	sg, err := adminEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("latentworker-w1"), Description: aws.String("w1"), VpcId: subnet.VpcId})
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := adminEC2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("no image: %v", err)
	}
	var ami string
	for _, im := range imgs.Images {
		if amiRE.MatchString(aws.ToString(im.ImageId)) {
			ami = aws.ToString(im.ImageId)
			break
		}
	}
	vol, err := adminEC2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: subnet.AvailabilityZone, Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}

	m := NewManager(adminIAM)
	u, err := m.EnsureUser(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := m.EnsureInstanceProfile(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := WorkerPolicy(motoOptions(accountOf(t, u.ARN), prof, ami, aws.ToString(sg.GroupId), aws.ToString(subnet.SubnetId)))
	if err != nil {
		t.Fatal(err)
	}
	key, err := m.CreateKey(ctx, u)
	if err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/moto-api/reset-auth", strings.NewReader("0"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reset-auth: %s", resp.Status)
	}
	// Enforcement is on: an unknown key is refused.
	if _, err := ec2Client(url, "AKIDNOBODY", "x").DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err == nil {
		t.Fatal("enforcement is not on: an unknown key may DescribeInstances")
	}

	wEC2 := ec2Client(url, key.ID, key.Secret.Reveal())
	wIAM := iamClient(url, key.ID, key.Secret.Reveal())
	var instance string
	calls := []struct {
		name string
		call func() error
	}{
		{"ec2:DescribeKeyPairs", func() error {
			_, err := wEC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"latentworker-w1"}})
			return err
		}},
		{"ec2:DescribeImages", func() error {
			_, err := wEC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
			return err
		}},
		{"ec2:RunInstances", func() error {
			out, err := wEC2.RunInstances(ctx, &ec2.RunInstancesInput{
				ImageId: aws.String(ami), InstanceType: ec2types.InstanceTypeT3Small,
				KeyName: aws.String("latentworker-w1"), SubnetId: subnet.SubnetId,
				SecurityGroupIds:   []string{aws.ToString(sg.GroupId)},
				IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String(prof.Name)},
				MinCount:           aws.Int32(1), MaxCount: aws.Int32(1),
			})
			if err == nil {
				instance = aws.ToString(out.Instances[0].InstanceId)
			}
			return err
		}},
		{"ec2:DescribeInstances", func() error {
			_, err := wEC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
			return err
		}},
		{"ec2:GetConsoleOutput", func() error {
			_, err := wEC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(instance)})
			return err
		}},
		{"ec2:CreateTags", func() error {
			_, err := wEC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{instance}, Tags: []ec2types.Tag{{Key: aws.String(fleet.TagWorker), Value: aws.String("w1")}}})
			return err
		}},
		{"ec2:TerminateInstances", func() error {
			_, err := wEC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instance}})
			return err
		}},
		{"ec2:CreateSecurityGroup", func() error {
			_, err := wEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("evil"), Description: aws.String("evil"), VpcId: subnet.VpcId})
			return err
		}},
		{"ec2:DeleteVolume", func() error {
			_, err := wEC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
			return err
		}},
		{"iam:CreateUser", func() error {
			_, err := wIAM.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String("evil")})
			return err
		}},
	}
	denied := func(err error) bool {
		switch awserr.Code(err) {
		case "AccessDenied", "UnauthorizedOperation", "AccessDeniedException":
			return true
		}
		// moto's IAM denial has a body the SDK's IAM deserializer does not
		// read (UnknownError); the status is still 403.
		var re *smithyhttp.ResponseError
		return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusForbidden
	}
	run := func() map[string]error {
		instance = "i-00000000000000000"
		res := map[string]error{}
		for _, c := range calls {
			res[c.name] = c.call()
		}
		return res
	}

	// The fully scoped policy: record what moto does with it.
	if _, err := m.PutPolicy(ctx, u, doc); err != nil {
		t.Fatal(err)
	}
	for name, err := range run() {
		switch {
		case err == nil:
			t.Logf("scoped policy, moto: %s allowed", name)
		case denied(err):
			t.Logf("scoped policy, moto: %s denied (%s)", name, awserr.Code(err))
		default:
			t.Logf("scoped policy, moto: %s failed otherwise: %v", name, err)
		}
		if name == "ec2:DescribeInstances" && err != nil {
			t.Errorf("scoped policy: %s = %v; want allowed (Resource * with a region condition)", name, err)
		}
		if strings.HasPrefix(name, "ec2:CreateSecurityGroup") || name == "ec2:DeleteVolume" || name == "iam:CreateUser" {
			if !denied(err) {
				t.Errorf("scoped policy: %s = %v; want denied", name, err)
			}
		}
	}

	// The same actions without resources and conditions: what moto can
	// enforce. Every call EC2LatentWorker makes passes; the rest is denied.
	if _, err := m.PutPolicy(ctx, u, doc.ActionLevel()); err != nil {
		t.Fatal(err)
	}
	res := run()
	for _, c := range calls {
		err := res[c.name]
		inPolicy := false
		for _, a := range doc.Actions() {
			inPolicy = inPolicy || a == c.name
		}
		switch {
		case inPolicy && err != nil:
			t.Errorf("action-level policy: %s = %v; want allowed", c.name, err)
		case !inPolicy && !denied(err):
			t.Errorf("action-level policy: %s = %v; want denied", c.name, err)
		}
	}
}
