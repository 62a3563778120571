package ec2front

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/latentworker/latentworker/iam"
	"github.com/latentworker/latentworker/lab/iameval"
	"github.com/latentworker/latentworker/lab/moto"
)

// launchBackend is the Backend of a test that launches and terminates
// instances without bodies; any other call panics, failing the test.
type launchBackend struct {
	Backend
	imageKey string // the KMS key ARN of every image's snapshots; "" none
}

func (launchBackend) CheckLaunch(region, imageID string) error { return nil }
func (launchBackend) Launch(ctx context.Context, spec LaunchSpec) (InstanceView, error) {
	return InstanceView{State: "running"}, nil
}
func (launchBackend) Instance(id string) (InstanceView, bool) { return InstanceView{}, false }
func (b launchBackend) Image(id string) (ImageView, bool) {
	return ImageView{Encrypted: b.imageKey != "", KMSKeyID: b.imageKey}, b.imageKey != ""
}

// need fails (CI) or skips the test when a component is missing.
func need(t *testing.T, bins ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts moto and the IAM evaluator")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing", b)
			}
			t.Skipf("%s is missing", b)
		}
	}
}

func cacheDir() string {
	if d := os.Getenv("LATENTLAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/latentlab"
}

const testAMI = "ami-0123456789abcdef0"

// TestEvaluatorDecides checks, against a real moto_server and the real
// evaluator, that a key's requests are decided by its policy with
// conditions and resource ARNs: the generated worker policy, as handed
// off, allows the master's launch with the handed-off arguments (DryRun
// and real), tagging and terminating its own instances, and denies
// every other instance type, profile, tag or instance; one condition
// changed in the policy denies the launch.
func TestEvaluatorDecides(t *testing.T) {
	need(t, "moto_server", "node", "npm")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ms, err := moto.Start(ctx, t.TempDir(), 0, []moto.AMI{{ID: testAMI, Name: "debian-12-amd64-20260101-0001", OwnerID: "136693071363",
		VirtualizationType: "hvm", Architecture: "x86_64", State: "available", ImageType: "machine", Hypervisor: "xen",
		RootDeviceType: "ebs", RootDeviceName: "/dev/xvda", Sriov: "simple"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Stop()
	dir, err := iameval.Install(ctx, cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := iameval.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	admin, err := ms.EnforceIAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := New(ms.URL, launchBackend{}, nil)
	f.Credentials, f.Enforcing, f.Evaluator = admin, true, ev
	srv := httptest.NewServer(f)
	defer srv.Close()
	cfg := func(c aws.Credentials) aws.Config {
		return aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: credentials.StaticCredentialsProvider{Value: c}}
	}
	aEC2, aIAM := ec2.NewFromConfig(cfg(admin)), awsiam.NewFromConfig(cfg(admin))

	// The worker's resources and its user, as handoff makes them.
	const worker = "evalw"
	m := iam.NewManager(aIAM)
	prof, err := m.EnsureInstanceProfile(ctx, worker)
	if err != nil {
		t.Fatal(err)
	}
	other, err := iam.NewManager(aIAM).EnsureInstanceProfile(ctx, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	sg, err := aEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("w"), Description: aws.String("w")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aEC2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("latentworker-" + worker), KeyType: ec2types.KeyTypeEd25519}); err != nil {
		t.Fatal(err)
	}
	subs, err := aEC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}})
	if err != nil || len(subs.Subnets) == 0 {
		t.Fatal(err)
	}
	subnet := aws.ToString(subs.Subnets[0].SubnetId)
	opts := iam.PolicyOptions{Region: "us-east-1", AccountID: "123456789012", AMIs: []string{testAMI}, InstanceTypes: []string{"t3.small"},
		KeyPair: "latentworker-" + worker, SecurityGroupID: aws.ToString(sg.GroupId), SubnetID: subnet,
		InstanceProfileARN: prof.ARN, RoleARN: prof.RoleARN, Tags: map[string]string{"latentworker:worker": worker}}
	doc, err := iam.WorkerPolicy(opts)
	if err != nil {
		t.Fatal(err)
	}
	u, err := m.EnsureUser(ctx, worker)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PutPolicy(ctx, u, doc); err != nil {
		t.Fatal(err)
	}
	key, err := m.CreateKey(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg(aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.Secret.Reveal()})
	kEC2, kIAM := ec2.NewFromConfig(kc), awsiam.NewFromConfig(kc)

	// The caller's signature is checked (moto sees the lab's).
	bad := ec2.NewFromConfig(cfg(aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: "not-the-secret"}))
	if _, err := bad.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err == nil || !strings.Contains(err.Error(), "AuthFailure") {
		t.Errorf("DescribeInstances signed with a wrong secret = %v; want AuthFailure", err)
	}

	launch := func(mod func(*ec2.RunInstancesInput)) (*ec2.RunInstancesOutput, error) {
		in := &ec2.RunInstancesInput{ImageId: aws.String(testAMI), InstanceType: ec2types.InstanceTypeT3Small,
			KeyName: aws.String("latentworker-" + worker), SecurityGroupIds: []string{aws.ToString(sg.GroupId)}, SubnetId: aws.String(subnet),
			IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String(prof.Name)}, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
		if mod != nil {
			mod(in)
		}
		return kEC2.RunInstances(ctx, in)
	}
	code := func(err error) string {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return ae.ErrorCode()
		}
		return ""
	}
	dry := func(in *ec2.RunInstancesInput) { in.DryRun = aws.Bool(true) }
	if _, err := launch(dry); code(err) != "DryRunOperation" {
		t.Fatalf("DryRun RunInstances as handed off = %v; want DryRunOperation", err)
	}
	for name, mod := range map[string]func(*ec2.RunInstancesInput){
		"another instance type": func(in *ec2.RunInstancesInput) { in.InstanceType = ec2types.InstanceTypeT3Large },
		"another profile": func(in *ec2.RunInstancesInput) {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(other.Name)}
		},
		"no profile":        func(in *ec2.RunInstancesInput) { in.IamInstanceProfile = nil },
		"the default group": func(in *ec2.RunInstancesInput) { in.SecurityGroupIds = nil },
	} {
		_, err := launch(func(in *ec2.RunInstancesInput) { mod(in); dry(in) })
		if code(err) != "UnauthorizedOperation" {
			t.Errorf("DryRun RunInstances with %s = %v; want UnauthorizedOperation", name, err)
		}
	}
	// No key pair is allowed, as on AWS (key-pair is not a required
	// resource of RunInstances).
	if _, err := launch(func(in *ec2.RunInstancesInput) { in.KeyName = nil; dry(in) }); code(err) != "DryRunOperation" {
		t.Errorf("DryRun RunInstances without a key pair = %v; want DryRunOperation", err)
	}
	// A refusal's encoded message decodes to the context that decided.
	_, err = launch(func(in *ec2.RunInstancesInput) { in.InstanceType = ec2types.InstanceTypeT3Large; dry(in) })
	msg := err.Error()
	i := strings.Index(msg, "Encoded authorization failure message: ")
	if i < 0 {
		t.Fatalf("no encoded message in %v", err)
	}
	enc := strings.Fields(msg[i+len("Encoded authorization failure message: "):])[0]
	dec, err := sts.NewFromConfig(cfg(admin)).DecodeAuthorizationMessage(ctx, &sts.DecodeAuthorizationMessageInput{EncodedMessage: aws.String(enc)})
	if err != nil || !strings.Contains(aws.ToString(dec.DecodedMessage), `"ec2:InstanceType","values":["t3.large"]`) {
		t.Errorf("DecodeAuthorizationMessage = %v, %v; want the instance's context with t3.large", dec, err)
	}

	// What the evaluator adds to a request (logged, not asserted).
	timeIt := func(n int, call func() error) time.Duration {
		start := time.Now()
		for range n {
			_ = call()
		}
		return time.Since(start) / time.Duration(n)
	}
	dKey := timeIt(20, func() error { _, err := kEC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); return err })
	dLab := timeIt(20, func() error { _, err := aEC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); return err })
	dRun := timeIt(10, func() error { _, err := launch(dry); return err })
	t.Logf("per request: DescribeInstances %v with the key (evaluated) vs %v with the lab's key (moto's check); RunInstances DryRun %v", dKey, dLab, dRun)

	// The real launch, tags and termination, as the master does them.
	out, err := launch(nil)
	if err != nil {
		t.Fatalf("RunInstances as handed off = %v; want allowed", err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	tag := func(k, v string, ids ...string) error {
		_, err := kEC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: []ec2types.Tag{{Key: aws.String(k), Value: aws.String(v)}}})
		return err
	}
	if err := tag("latentworker:worker", worker, id); err != nil {
		t.Errorf("CreateTags with the handed-off tag = %v; want allowed", err)
	}
	if err := tag("Name", "x", id); code(err) != "UnauthorizedOperation" {
		t.Errorf("CreateTags with another tag = %v; want UnauthorizedOperation", err)
	}
	// An instance without the worker's profile: not the key's.
	foreign, err := aEC2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(testAMI), InstanceType: ec2types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	fid := aws.ToString(foreign.Instances[0].InstanceId)
	if err := tag("latentworker:worker", worker, fid); code(err) != "UnauthorizedOperation" {
		t.Errorf("CreateTags on an instance without the worker's profile = %v; want UnauthorizedOperation", err)
	}
	if _, err := kEC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(fid)}); code(err) != "UnauthorizedOperation" {
		t.Errorf("GetConsoleOutput of an instance without the worker's profile = %v; want UnauthorizedOperation", err)
	}
	if _, err := kEC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{fid}}); code(err) != "UnauthorizedOperation" {
		t.Errorf("TerminateInstances of an instance without the worker's profile = %v; want UnauthorizedOperation", err)
	}
	if _, err := kEC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("DescribeInstances = %v; want allowed", err)
	}
	if _, err := kEC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Errorf("TerminateInstances of the worker's instance = %v; want allowed", err)
	}
	if _, err := kIAM.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String("evil")}); code(err) != "AccessDenied" {
		t.Errorf("iam:CreateUser = %v; want AccessDenied", err)
	}

	// iam:SimulatePrincipalPolicy, answered by the evaluator.
	sim, err := aIAM.SimulatePrincipalPolicy(ctx, &awsiam.SimulatePrincipalPolicyInput{PolicySourceArn: aws.String(u.ARN),
		ActionNames:  []string{"ec2:TerminateInstances", "ec2:CreateImage"},
		ResourceArns: []string{"arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"},
		ContextEntries: []iamtypes.ContextEntry{
			{ContextKeyName: aws.String("ec2:InstanceProfile"), ContextKeyType: "string", ContextKeyValues: []string{prof.ARN}},
			{ContextKeyName: aws.String("aws:RequestedRegion"), ContextKeyType: "string", ContextKeyValues: []string{"us-east-1"}},
		}})
	if err != nil || len(sim.EvaluationResults) != 2 || sim.EvaluationResults[0].EvalDecision != "allowed" || sim.EvaluationResults[1].EvalDecision != "implicitDeny" {
		t.Errorf("SimulatePrincipalPolicy = %+v, %v; want TerminateInstances allowed, CreateImage implicitDeny", sim, err)
	}

	// An image encrypted with a customer managed key: the launch needs the
	// key's use through EC2, which the policy gives when handed off with
	// the key (iam.KMSStatements).
	keyARN := "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	f.Backend = launchBackend{imageKey: keyARN}
	if _, err := launch(dry); code(err) != "UnauthorizedOperation" {
		t.Errorf("DryRun RunInstances of an encrypted image without the key's permissions = %v; want UnauthorizedOperation", err)
	}
	withKMS := opts
	withKMS.KMSKeys = []string{keyARN}
	kdoc, err := iam.WorkerPolicy(withKMS)
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := m.PutPolicy(ctx, u, kdoc); err != nil || !ch {
		t.Fatal(ch, err)
	}
	if have, err := m.Policy(ctx, u); err != nil || len(have.Statement) != len(kdoc.Statement) {
		t.Fatalf("policy now %d statements, %v", len(have.Statement), err)
	}
	if _, err := launch(dry); code(err) != "DryRunOperation" {
		t.Errorf("DryRun RunInstances of an encrypted image with the key's statements = %v; want DryRunOperation", err)
	}
	f.Backend = launchBackend{}

	// One condition changed: the launch is denied.
	changed := doc
	changed.Statement = append([]iam.Statement(nil), doc.Statement...)
	for i, s := range changed.Statement {
		if s.Sid == "LaunchOnlyTheseTypesWithTheWorkerProfile" {
			c := iam.Condition{}
			for op, kv := range s.Condition {
				c[op] = map[string][]string{}
				for k, v := range kv {
					c[op][k] = v
				}
			}
			c["StringEquals"]["ec2:InstanceType"] = []string{"t3.micro"}
			changed.Statement[i].Condition = c
		}
	}
	if _, err := m.PutPolicy(ctx, u, changed); err != nil {
		t.Fatal(err)
	}
	if _, err := launch(dry); code(err) != "UnauthorizedOperation" {
		t.Errorf("DryRun RunInstances after ec2:InstanceType changed in the policy = %v; want UnauthorizedOperation", err)
	}
}

// The lab names a Deny statement and where it starts, as IAM's
// MatchedStatements do.
func TestDenyingPolicies(t *testing.T) {
	doc := []byte("{\"Version\": \"2012-10-17\", \"Statement\": [\n  {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"},\n  {\"Effect\": \"Deny\", \"Action\": [\"ec2:Run*\"], \"Resource\": \"*\"}\n]}")
	got := denyingPolicies([]iameval.Policy{{Name: "baker", Document: doc}}, "ec2:RunInstances")
	if len(got) != 1 || got[0].policy != "baker" || got[0].line != 3 || got[0].column != 3 {
		t.Errorf("denyingPolicies = %+v; want baker at line 3, column 3", got)
	}
	if got := denyingPolicies([]iameval.Policy{{Name: "baker", Document: doc}}, "ec2:DescribeImages"); len(got) != 0 {
		t.Errorf("denyingPolicies(DescribeImages) = %+v; want none", got)
	}
}
