package handoff

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/iam"
)

// LaunchAPI is the EC2 call the check makes with the handed-off key.
type LaunchAPI interface {
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
}

// SimulateAPI is the IAM call the check makes with the caller's key.
type SimulateAPI interface {
	SimulatePrincipalPolicy(context.Context, *awsiam.SimulatePrincipalPolicyInput, ...func(*awsiam.Options)) (*awsiam.SimulatePrincipalPolicyOutput, error)
}

// CheckOptions say what to check: the bundle as handed off, and who.
type CheckOptions struct {
	Bundle Bundle
	// UserARN is the IAM user of the handed-off key; InstanceProfileARN
	// the worker's instance profile; AccountID the account.
	UserARN            string
	InstanceProfileARN string
	AccountID          string
	// Key is an EC2 client signed with the handed-off key (nil when its
	// secret is not known: the launch is then not checked).
	Key LaunchAPI
	// IAM is signed with the caller's key (iam:SimulatePrincipalPolicy).
	IAM SimulateAPI
	// Wait bounds how long a new key may take to work (AWS: seconds);
	// 0 means DefaultCheckWait. Sleep is time.Sleep unless set.
	Wait  time.Duration
	Sleep func(time.Duration)
}

// DefaultCheckWait is how long the check waits for a new key to work and
// its policy to apply.
const DefaultCheckWait = time.Minute

// CheckError is a check that failed: the calls the master makes that the
// key may not make.
type CheckError struct {
	Failures []string // one per call, naming it
}

func (e *CheckError) Error() string {
	return "handoff check: the master's key is refused " + strings.Join(e.Failures, "; ")
}

// LaunchInput is the RunInstances call EC2LatentWorker makes with the
// bundle's snippet: the same arguments (keep it in step with
// MasterCfgSnippet).
func LaunchInput(b Bundle) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{
		ImageId:            aws.String(b.AMI),
		InstanceType:       types.InstanceType(b.InstanceTypes[0]),
		KeyName:            aws.String(b.KeyPairName),
		SecurityGroupIds:   []string{b.SecurityGroupID},
		SubnetId:           aws.String(b.SubnetID),
		IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String(b.InstanceProfileName)},
		MinCount:           aws.Int32(1),
		MaxCount:           aws.Int32(1),
	}
}

// Check proves the handed-off key can do what the master will do: with
// the key itself, RunInstances with DryRun and the snippet's arguments
// must answer DryRunOperation (waiting, up to Wait, for a new key to
// work); the calls the master makes on its instances afterwards
// (DescribeInstances, GetConsoleOutput, CreateTags with the bundle's tags,
// TerminateInstances) are simulated for the key's user
// (iam:SimulatePrincipalPolicy) on an instance with the worker's profile.
// A failure is a *CheckError naming each refused call.
func Check(ctx context.Context, o CheckOptions) error {
	if o.Wait == 0 {
		o.Wait = DefaultCheckWait
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	b := o.Bundle
	var failures []string
	if o.Key != nil {
		if f := checkLaunch(ctx, o); f != "" {
			failures = append(failures, f)
		}
	}
	region := b.Region
	instance := fmt.Sprintf("arn:%s:ec2:%s:%s:instance/i-0123456789abcdef0", iam.Partition(region), region, o.AccountID)
	str := func(k string, v ...string) iamtypes.ContextEntry {
		return iamtypes.ContextEntry{ContextKeyName: aws.String(k), ContextKeyType: iamtypes.ContextKeyTypeEnumString, ContextKeyValues: v}
	}
	inRegion := []iamtypes.ContextEntry{str("aws:RequestedRegion", region), str("ec2:Region", region)}
	own := append(slices.Clone(inRegion), iamtypes.ContextEntry{ContextKeyName: aws.String("ec2:InstanceProfile"),
		ContextKeyType: iamtypes.ContextKeyTypeEnumString, ContextKeyValues: []string{o.InstanceProfileARN}})
	tagging := slices.Clone(own)
	keys := slices.Sorted(maps.Keys(b.Tags))
	if len(keys) > 0 {
		tagging = append(tagging, iamtypes.ContextEntry{ContextKeyName: aws.String("aws:TagKeys"),
			ContextKeyType: iamtypes.ContextKeyTypeEnumStringList, ContextKeyValues: keys})
		for _, k := range keys {
			tagging = append(tagging, str("aws:RequestTag/"+k, b.Tags[k]))
		}
	}
	sims := []struct {
		action, resource, what string
		ctx                    []iamtypes.ContextEntry
	}{
		{"ec2:DescribeInstances", "*", "the master's DescribeInstances", inRegion},
		{"ec2:GetConsoleOutput", instance, "the master's GetConsoleOutput of its instance", own},
		{"ec2:CreateTags", instance, "the master's CreateTags of its instance with the bundle's tags", tagging},
		{"ec2:TerminateInstances", instance, "the master's TerminateInstances of its instance", own},
	}
	for _, s := range sims {
		out, err := o.IAM.SimulatePrincipalPolicy(ctx, &awsiam.SimulatePrincipalPolicyInput{
			PolicySourceArn: aws.String(o.UserARN), ActionNames: []string{s.action},
			ResourceArns: []string{s.resource}, ContextEntries: s.ctx,
		})
		switch {
		case err != nil:
			failures = append(failures, fmt.Sprintf("%s (%s): simulating it for %s failed: %v", s.action, s.what, o.UserARN, err))
		case len(out.EvaluationResults) == 0:
			failures = append(failures, fmt.Sprintf("%s (%s): the simulation for %s answered nothing", s.action, s.what, o.UserARN))
		default:
			for _, r := range out.EvaluationResults {
				if r.EvalDecision != iamtypes.PolicyEvaluationDecisionTypeAllowed {
					failures = append(failures, fmt.Sprintf("%s (%s): %s for %s", s.action, s.what, r.EvalDecision, o.UserARN))
				}
			}
		}
	}
	if len(failures) > 0 {
		return &CheckError{Failures: failures}
	}
	return nil
}

// checkLaunch is RunInstances with DryRun and the key; "" when it answers
// DryRunOperation. A key AWS does not know yet, or a policy not yet in
// force, is retried until o.Wait.
func checkLaunch(ctx context.Context, o CheckOptions) string {
	in := LaunchInput(o.Bundle)
	in.DryRun = aws.Bool(true)
	deadline := time.Now().Add(o.Wait)
	for {
		_, err := o.Key.RunInstances(ctx, in)
		c := awserr.Code(err)
		switch {
		case c == "DryRunOperation":
			return ""
		case err == nil:
			return "ec2:RunInstances (the master's launch, with DryRun): it launched an instance instead of answering DryRunOperation"
		case ctx.Err() != nil:
			return "ec2:RunInstances (the master's launch, with DryRun): " + ctx.Err().Error()
		}
		retry := c == "AuthFailure" || c == "InvalidClientTokenId" || c == "UnrecognizedClientException" || c == "UnauthorizedOperation" ||
			profilePropagating(err)
		if !retry || time.Now().After(deadline) {
			msg := err.Error()
			var ue interface{ ErrorMessage() string }
			if errors.As(err, &ue) {
				msg = c + ": " + ue.ErrorMessage()
			}
			return "ec2:RunInstances (the master's launch, with DryRun and the snippet's arguments): " + msg
		}
		o.Sleep(2 * time.Second)
	}
}

// profilePropagating reports whether err is EC2 not knowing an instance
// profile yet: IAM takes seconds to tell EC2 of a new one, and EC2 answers
// InvalidParameterValue "... Invalid IAM Instance Profile name" (or
// "... ARN") meanwhile. Only the message tells it from another bad value.
func profilePropagating(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidParameterValue" &&
		strings.Contains(ae.ErrorMessage(), "Invalid IAM Instance Profile")
}
