package realism_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/latentworker/latentworker/lab/ec2front"
	"github.com/latentworker/latentworker/lab/moto/mototest"
	"github.com/latentworker/latentworker/lab/realism"
)

// noBackend is the front's Backend in tests whose requests never reach an
// instance or image: any call panics, failing the test.
type noBackend struct{ ec2front.Backend }

// world is a real moto_server behind the lab's real front.
type world struct {
	moto  string // its URL
	front *ec2front.Front
}

func startWorld(t *testing.T) *world {
	t.Helper()
	if testing.Short() {
		t.Skip("starts moto_server: not with -short")
	}
	url := mototest.Start(t)
	// moto's first EC2 call builds its backend (seconds): not in a
	// measured window.
	if _, err := rawEC2(url).DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatal(err)
	}
	return &world{moto: url, front: ec2front.New(url, noBackend{}, nil)}
}

// endpoint serves the front through a realism layer with cfg.
func (w *world) endpoint(t *testing.T, cfg realism.Config) string {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(realism.New(cfg, w.front, t.Logf))
	t.Cleanup(srv.Close)
	return srv.URL
}

// rawEC2 is an EC2 client that does not retry: it sees every answer.
func rawEC2(url string) *ec2.Client {
	return ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		Retryer:     aws.NopRetryer{}})
}

func rawIAM(url string) *iam.Client {
	return iam.New(iam.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		Retryer:     aws.NopRetryer{}})
}

// code returns an error's API error code and HTTP status ("", 0 for nil).
func code(err error) (string, int) {
	if err == nil {
		return "", 0
	}
	var ae smithy.APIError
	c := "?"
	if errors.As(err, &ae) {
		c = ae.ErrorCode()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return c, re.HTTPStatusCode()
	}
	return c, 0
}

func near(t *testing.T, what string, got, n int, want float64) {
	t.Helper()
	rate := float64(got) / float64(n)
	t.Logf("%s: %d of %d (%.2f; set %.2f)", what, got, n, rate, want)
	if rate < want-0.08 || rate > want+0.08 {
		t.Errorf("%s: rate %.2f; want about %.2f", what, rate, want)
	}
}

// TestFaultRates: a client that does not retry sees RequestLimitExceeded
// (HTTP 503, EC2's error document) and server errors at the set rates on
// the actions in fault_actions, and never elsewhere.
func TestFaultRates(t *testing.T) {
	w := startWorld(t)
	url := w.endpoint(t, realism.Config{Seed: 7, Throttle: 0.3, ServerErrors: 0.1, FaultActions: []string{"DescribeRegions"}})
	c := rawEC2(url)
	ctx := context.Background()
	const n = 300
	counts := map[string]int{}
	for range n {
		_, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
		cd, status := code(err)
		switch {
		case err == nil:
			counts["ok"]++
		case cd == "RequestLimitExceeded" && status == 503:
			counts["throttled"]++
		case cd == "InternalError" && status == 500, cd == "ServiceUnavailable" && status == 503:
			counts["5xx"]++
		default:
			t.Fatalf("DescribeRegions: %v (code %s, HTTP %d)", err, cd, status)
		}
	}
	near(t, "RequestLimitExceeded", counts["throttled"], n, 0.3)
	near(t, "InternalError/ServiceUnavailable", counts["5xx"], n, 0.1)
	for i := range 30 {
		if _, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{}); err != nil {
			t.Fatalf("DescribeSecurityGroups #%d (not in fault_actions): %v", i, err)
		}
	}
	// The SDK's standard retryer, given enough attempts, rides through it.
	retrying := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), RetryMaxAttempts: 10,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", "")})
	for i := range 20 {
		if _, err := retrying.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
			t.Errorf("DescribeRegions with the SDK's retries #%d: %v", i, err)
		}
	}
}

// TestServicesAndAdmin: faults apply to the services named (ec2 by
// default), with IAM's own error document, and never to moto's admin API.
func TestServicesAndAdmin(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	ec2Only := w.endpoint(t, realism.Config{Throttle: 1})
	if _, err := rawIAM(ec2Only).ListUsers(ctx, &iam.ListUsersInput{}); err != nil {
		t.Errorf("IAM ListUsers with faults on EC2 only: %v", err)
	}
	if _, err := rawEC2(ec2Only).DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err == nil {
		t.Error("EC2 DescribeRegions with throttle = 1: no error")
	}
	resp, err := http.Get(ec2Only + "/moto-api/data.json")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("moto's admin API through the layer: %v %v; want 200", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	iamToo := w.endpoint(t, realism.Config{Throttle: 1, FaultServices: []string{"iam"}})
	_, err = rawIAM(iamToo).ListUsers(ctx, &iam.ListUsersInput{})
	if cd, status := code(err); cd != "Throttling" || status != 400 {
		t.Errorf("IAM ListUsers with throttle = 1 on iam: %v (code %q, HTTP %d); want Throttling, 400", err, cd, status)
	}
}

// TestLostAnswers: the call reaches moto and takes effect, the client gets
// InternalError; a create retried after it meets the Duplicate.
func TestLostAnswers(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	plain := rawEC2(w.moto)
	lossy := rawEC2(w.endpoint(t, realism.Config{Seed: 3, LostAnswers: 0.4, FaultActions: []string{"CreateTags"}}))
	sg, err := plain.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("lost"), Description: aws.String("lost answers")})
	if err != nil {
		t.Fatal(err)
	}
	// moto takes at most 50 tags per resource.
	groups := []string{aws.ToString(sg.GroupId)}
	for i := 1; i < 3; i++ {
		g, err := plain.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(fmt.Sprintf("lost%d", i)), Description: aws.String("lost answers")})
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, aws.ToString(g.GroupId))
	}
	const n = 150
	lost := 0
	for i := range n {
		_, err := lossy.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{groups[i/50]},
			Tags: []types.Tag{{Key: aws.String(fmt.Sprintf("k%d", i%50)), Value: aws.String("v")}}})
		switch cd, status := code(err); {
		case err == nil:
		case cd == "InternalError" && status == 500:
			lost++
		default:
			t.Fatalf("CreateTags: %v", err)
		}
	}
	near(t, "lost answers", lost, n, 0.4)
	out, err := plain.DescribeTags(ctx, &ec2.DescribeTagsInput{MaxResults: aws.Int32(1000),
		Filters: []types.Filter{{Name: aws.String("resource-id"), Values: groups}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Tags) != n {
		t.Errorf("%d tags on %v after %d CreateTags (%d answers lost); want every call to have taken effect", len(out.Tags), groups, n, lost)
	}

	allLost := rawEC2(w.endpoint(t, realism.Config{LostAnswers: 1, FaultActions: []string{"CreateSecurityGroup"}}))
	_, err = allLost.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("twice"), Description: aws.String("d")})
	if cd, _ := code(err); cd != "InternalError" {
		t.Fatalf("CreateSecurityGroup with its answer lost: %v; want InternalError", err)
	}
	_, err = plain.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("twice"), Description: aws.String("d")})
	if cd, _ := code(err); cd != "InvalidGroup.Duplicate" {
		t.Errorf("CreateSecurityGroup again after a lost answer: %v; want InvalidGroup.Duplicate (the first took effect)", err)
	}
}

// TestConsistency: a new security group and key pair answer NotFound, by
// ID and by name, for the window; a list shows them; then they are found.
func TestConsistency(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	const window = 5 * time.Second
	c := rawEC2(w.endpoint(t, realism.Config{Consistency: realism.Duration{Duration: window}}))
	start := time.Now()
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("young"), Description: aws.String("d")})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(sg.GroupId)
	_, err = c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("young-key"),
		PublicKeyMaterial: []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHnXr0Yw2w4Ww4cWm0Q2rOqkqVqKq5X5m3eJ9f0bqXQh test")})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"DescribeSecurityGroups(GroupIds)": func() error {
			_, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
			return err
		},
		"DescribeSecurityGroups(GroupNames)": func() error {
			_, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"young"}})
			return err
		},
		"AuthorizeSecurityGroupIngress": func() error {
			_, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(id),
				IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
					IpRanges: []types.IpRange{{CidrIp: aws.String("127.0.0.1/32")}}}}})
			return err
		},
		"CreateTags": func() error {
			_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
			return err
		},
		"DescribeKeyPairs(KeyNames)": func() error {
			_, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"young-key"}})
			return err
		},
	}
	want := map[string]string{"DescribeKeyPairs(KeyNames)": "InvalidKeyPair.NotFound"}
	for name, call := range calls {
		w := want[name]
		if w == "" {
			w = "InvalidGroup.NotFound"
		}
		if cd, status := code(call()); cd != w || status != 400 {
			t.Errorf("%s right after the create: code %q HTTP %d; want %s, 400", name, cd, status, w)
		}
	}
	list, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		t.Fatalf("DescribeSecurityGroups (all): %v", err)
	}
	if len(list.SecurityGroups) == 0 {
		t.Error("DescribeSecurityGroups (all): nothing")
	}
	if time.Since(start) >= window {
		t.Fatalf("the checks took %s, longer than the window: cannot tell", time.Since(start))
	}
	time.Sleep(window - time.Since(start) + 100*time.Millisecond)
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s after the window: %v", name, err)
		}
	}
}

// TestValidate: each knob's bad value is refused naming it.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  realism.Config
		want string
	}{
		{realism.Config{Throttle: 1.5}, "realism.throttle"},
		{realism.Config{ServerErrors: -0.1}, "realism.server_errors"},
		{realism.Config{Throttle: 0.6, LostAnswers: 0.6}, "at most 1"},
		{realism.Config{Consistency: realism.Duration{Duration: -time.Second}}, "realism.consistency"},
		{realism.Config{FaultServices: []string{"s3"}}, "realism.fault_services"},
		{realism.Config{FaultActions: []string{"ec2:RunInstances"}}, "realism.fault_actions"},
		{realism.Config{XenTypes: []string{"t2.[micro"}}, "realism.xen_types"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if (realism.Config{}).Enabled() {
		t.Error("the zero Config is enabled")
	}
	for typ, xen := range map[string]bool{"t2.micro": true, "m4.large": true, "c4.xlarge": true, "r4.large": true, "m3.medium": true,
		"i3.large": true, "i3en.large": false, "t3.large": false, "m5.large": false, "c7g.large": false, "p3dn.24xlarge": false} {
		if got := (realism.Config{}).Xen(typ); got != xen {
			t.Errorf("Xen(%s) = %v; want %v", typ, got, xen)
		}
	}
}
