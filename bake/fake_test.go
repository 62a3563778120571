package bake

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
)

// fakeEC2 answers only the calls a test expects; any other call panics
// through the nil embedded interface, failing the test.
type fakeEC2 struct {
	EC2API
	calls []string
}

func (f *fakeEC2) ImportKeyPair(_ context.Context, in *ec2.ImportKeyPairInput, _ ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error) {
	f.calls = append(f.calls, "ImportKeyPair "+aws.ToString(in.KeyName))
	return &ec2.ImportKeyPairOutput{KeyName: in.KeyName, KeyPairId: aws.String("key-0123456789abcdef0")}, nil
}

// DeleteKeyPair fails as AWS does when a policy denies it, which the lab's
// permissive endpoint cannot produce.
func (f *fakeEC2) DeleteKeyPair(_ context.Context, in *ec2.DeleteKeyPairInput, _ ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error) {
	f.calls = append(f.calls, "DeleteKeyPair "+aws.ToString(in.KeyName))
	return nil, &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "not allowed"}
}

type fakeSTS struct{ STSAPI }

func TestUndoFailureNamesLeftover(t *testing.T) {
	f := &fakeEC2{}
	boom := errors.New("step failed")
	cfg := config.Default()
	cfg.Worker.Name = "w"
	res, err := Run(context.Background(), Options{
		Config: cfg, Password: config.NewSecret("hunter2-secret"), EC2: f, STS: fakeSTS{},
		Region: "us-east-1", RunID: "20261124T001500Z-4f2a9c",
		Steps: []Step{
			{StepTempKey, tempKey},
			{"fail", func(context.Context, *State) error { return boom }},
		},
	})
	if !errors.Is(err, boom) {
		t.Errorf("Run error = %v; want it to wrap the step's error", err)
	}
	var le *LeftoverError
	if !errors.As(err, &le) || len(res.Leftovers) != 1 {
		t.Fatalf("Run = %v, leftovers %v; want one leftover key pair", err, res.Leftovers)
	}
	name := "latentworker-20261124T001500Z-4f2a9c"
	for _, want := range []string{name, "aws ec2 delete-key-pair --key-name " + name + " --region us-east-1", "UnauthorizedOperation"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2-secret") {
		t.Error("error carries the password")
	}
	if got := strings.Join(f.calls, "; "); got != "ImportKeyPair "+name+"; DeleteKeyPair "+name {
		t.Errorf("calls = %s", got)
	}
}

// consoleFake shows a console without host keys, as an image without
// cloud-init's key printing does (every lab instance prints them).
type consoleFake struct {
	EC2API
	reads int
}

func (f *consoleFake) GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error) {
	f.reads++
	return &ec2.GetConsoleOutputOutput{Output: aws.String("Ym9vdGluZwo=")}, nil // "booting\n"
}

func TestConsoleWithoutHostKeys(t *testing.T) {
	f := &consoleFake{}
	s := &State{Platform: platform.MustLookup("debian-12"), opts: Options{EC2: f, Timeouts: Timeouts{Console: 300 * time.Millisecond, Poll: 50 * time.Millisecond}.withDefaults()}}
	_, err := s.consoleHostKeys(context.Background(), "i-0123456789abcdef0")
	if !errors.Is(err, provision.ErrNoHostKeys) || !strings.Contains(err.Error(), "i-0123456789abcdef0") {
		t.Errorf("consoleHostKeys = %v; want ErrNoHostKeys naming the instance", err)
	}
	if f.reads < 2 {
		t.Errorf("console read %d times; want polling until the bound", f.reads)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.consoleHostKeys(ctx, "i-0123456789abcdef0"); !errors.Is(err, context.Canceled) || errors.Is(err, provision.ErrNoHostKeys) {
		t.Errorf("consoleHostKeys(cancelled) = %v; want context.Canceled, not a TOFU fallback", err)
	}
}

// publicFake describes the new image as public, which a lab account cannot
// be made to do by default.
type publicFake struct{ EC2API }

func (publicFake) DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	return &ec2.DescribeImagesOutput{Images: []types.Image{{ImageId: aws.String("ami-0123456789abcdef0"), Public: aws.Bool(true), State: types.ImageStatePending}}}, nil
}

func TestPublicImageRefused(t *testing.T) {
	s := &State{ImageID: "ami-0123456789abcdef0", opts: Options{EC2: publicFake{}, Timeouts: Timeouts{Poll: 10 * time.Millisecond, Image: time.Minute}.withDefaults()}}
	err := waitImage(context.Background(), s)
	if !errors.Is(err, ErrPublicImage) || !strings.Contains(err.Error(), "ami-0123456789abcdef0") {
		t.Errorf("waitImage(public image) = %v; want ErrPublicImage naming the AMI", err)
	}
}
