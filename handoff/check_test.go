package handoff

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"
)

// newKeyEC2 is AWS right after CreateAccessKey, which the lab cannot be: the
// key is unknown for the first calls. Any call but a DryRun launch fails
// the test.
type newKeyEC2 struct {
	t       *testing.T
	unknown int // calls answered AuthFailure before the key works
	calls   int
}

func (f *newKeyEC2) RunInstances(_ context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	if !aws.ToBool(in.DryRun) {
		f.t.Fatal("the check launched without DryRun")
	}
	f.calls++
	if f.calls <= f.unknown {
		return nil, &smithy.GenericAPIError{Code: "AuthFailure", Message: "AWS was not able to validate the provided access credentials"}
	}
	return nil, &smithy.GenericAPIError{Code: "DryRunOperation", Message: "Request would have succeeded, but DryRun flag is set."}
}

// allowAll answers every simulation "allowed".
type allowAll struct{ actions []string }

func (a *allowAll) SimulatePrincipalPolicy(_ context.Context, in *awsiam.SimulatePrincipalPolicyInput, _ ...func(*awsiam.Options)) (*awsiam.SimulatePrincipalPolicyOutput, error) {
	a.actions = append(a.actions, in.ActionNames...)
	return &awsiam.SimulatePrincipalPolicyOutput{EvaluationResults: []iamtypes.EvaluationResult{{EvalActionName: aws.String(in.ActionNames[0]), EvalDecision: iamtypes.PolicyEvaluationDecisionTypeAllowed}}}, nil
}

func checkBundle() Bundle {
	return Bundle{WorkerName: "w", Region: "eu-west-1", AMI: "ami-0123456789abcdef0", InstanceTypes: []string{"t3.small"},
		KeyPairName: "latentworker-w", SecurityGroupID: "sg-0123456789abcdef0", SubnetID: "subnet-0123456789abcdef0",
		InstanceProfileName: "latentworker-w", Tags: map[string]string{"latentworker:worker": "w"}}
}

// TestCheckWaitsForANewKey: a key AWS does not know yet is retried, within
// the bound; past it, the check fails naming the launch.
func TestCheckWaitsForANewKey(t *testing.T) {
	var slept time.Duration
	sleep := func(d time.Duration) { slept += d }
	k := &newKeyEC2{t: t, unknown: 3}
	sim := &allowAll{}
	err := Check(context.Background(), CheckOptions{Bundle: checkBundle(), UserARN: "arn:aws:iam::123456789012:user/latentworker/latentworker-w",
		InstanceProfileARN: "arn:aws:iam::123456789012:instance-profile/latentworker/latentworker-w", AccountID: "123456789012",
		Key: k, IAM: sim, Wait: time.Minute, Sleep: sleep})
	if err != nil || k.calls != 4 || slept == 0 {
		t.Errorf("Check with a key unknown for 3 calls = %v after %d calls; want success on the 4th", err, k.calls)
	}
	if got := strings.Join(sim.actions, " "); got != "ec2:DescribeInstances ec2:GetConsoleOutput ec2:CreateTags ec2:TerminateInstances" {
		t.Errorf("simulated %s; want the master's four calls", got)
	}

	k = &newKeyEC2{t: t, unknown: 1 << 30}
	err = Check(context.Background(), CheckOptions{Bundle: checkBundle(), Key: k, IAM: &allowAll{}, Wait: time.Nanosecond, Sleep: sleep})
	var ce *CheckError
	if !errors.As(err, &ce) || len(ce.Failures) != 1 || !strings.HasPrefix(ce.Failures[0], "ec2:RunInstances") || !strings.Contains(ce.Failures[0], "AuthFailure") {
		t.Errorf("Check with a key that never works = %v; want a CheckError naming ec2:RunInstances and AuthFailure", err)
	}
}
