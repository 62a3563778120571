package bake

// The permissions a bake needs, and asking IAM whether the caller has them
// (iam:SimulatePrincipalPolicy), for `latentworker validate`.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/latentworker/latentworker/awserr"
)

// Permission is one action a bake calls, on the resources it acts on
// (ARN patterns of the run's region and account).
type Permission struct {
	Action    string
	Resources []string
}

// Permissions are the actions a bake of this state's configuration calls
// (after preflight: the region, account, base image and subnet are known):
// EC2's for the builder, its key pair, group, image and copies, and KMS's
// for a customer managed key.
func (s *State) Permissions(account string) []Permission {
	cfg := s.opts.Config
	part := partitionOf(s.Region)
	arn := func(region, resource string) string {
		return fmt.Sprintf("arn:%s:ec2:%s:%s:%s", part, region, account, resource)
	}
	r := func(resource string) string { return arn(s.Region, resource) }
	// Images and snapshots have no account in their ARNs.
	shared := func(region, resource string) string { return fmt.Sprintf("arn:%s:ec2:%s::%s", part, region, resource) }
	image, snapshot := shared(s.Region, "image/*"), shared(s.Region, "snapshot/*")
	all := []string{"*"}
	perms := []Permission{
		{"ec2:DescribeImages", all}, {"ec2:DescribeInstanceTypes", all}, {"ec2:DescribeInstanceTypeOfferings", all},
		{"ec2:DescribeSubnets", all}, {"ec2:DescribeVpcs", all}, {"ec2:DescribeKeyPairs", all},
		{"ec2:DescribeSecurityGroups", all}, {"ec2:DescribeInstances", all}, {"ec2:DescribeSnapshots", all},
		{"ec2:ImportKeyPair", []string{r("key-pair/*")}},
		{"ec2:DeleteKeyPair", []string{r("key-pair/*")}},
		{"ec2:CreateSecurityGroup", []string{r("security-group/*"), r("vpc/" + s.Network.VpcID)}},
		{"ec2:AuthorizeSecurityGroupIngress", []string{r("security-group/*")}},
		{"ec2:DeleteSecurityGroup", []string{r("security-group/*")}},
		{"ec2:RunInstances", []string{r("instance/*"), shared(s.Region, "image/"+s.BaseAMI), image,
			r("subnet/" + s.Network.SubnetID), r("security-group/*"), r("key-pair/*"), r("volume/*"), r("network-interface/*")}},
		{"ec2:CreateTags", []string{r("instance/*"), r("volume/*"), r("key-pair/*"), r("security-group/*"), image, snapshot}},
		{"ec2:GetConsoleOutput", []string{r("instance/*")}},
		{"ec2:StopInstances", []string{r("instance/*")}},
		{"ec2:TerminateInstances", []string{r("instance/*")}},
		{"ec2:CreateImage", []string{r("instance/*"), image, snapshot}},
		{"ec2:ModifyImageAttribute", []string{image}},
		{"ec2:DeregisterImage", []string{image}},
		{"ec2:DeleteSnapshot", []string{snapshot}},
	}
	if len(cfg.AWS.CopyToRegions) > 0 {
		perms = append(perms, Permission{"ec2:DescribeRegions", all})
		for _, region := range cfg.AWS.CopyToRegions {
			perms = append(perms,
				Permission{"ec2:CopyImage", []string{shared(region, "image/*")}},
				Permission{"ec2:CreateTags", []string{shared(region, "image/*"), shared(region, "snapshot/*")}},
				Permission{"ec2:DeregisterImage", []string{shared(region, "image/*")}},
				Permission{"ec2:DeleteSnapshot", []string{shared(region, "snapshot/*")}},
			)
		}
	}
	if cfg.Image.KMSKeyID != "" {
		kmsKey := fmt.Sprintf("arn:%s:kms:%s:%s:key/*", part, s.Region, account)
		perms = append(perms, Permission{"kms:DescribeKey", []string{kmsKey}}, Permission{"kms:CreateGrant", []string{kmsKey}},
			Permission{"kms:GenerateDataKeyWithoutPlaintext", []string{kmsKey}}, Permission{"kms:Decrypt", []string{kmsKey}})
	}
	return perms
}

func partitionOf(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// SimulateAPI is the IAM call that asks whether a principal may act.
type SimulateAPI interface {
	SimulatePrincipalPolicy(context.Context, *awsiam.SimulatePrincipalPolicyInput, ...func(*awsiam.Options)) (*awsiam.SimulatePrincipalPolicyOutput, error)
}

// Denial is an action the caller may not take on a resource: the
// decision (implicitDeny: no statement allows it; explicitDeny: a
// statement denies it) and the statements IAM names.
type Denial struct {
	Action, Resource, Decision string
	Statements                 []string // "policy NAME" and where in it, when IAM says
}

func (d Denial) String() string {
	s := fmt.Sprintf("%s on %s: %s", d.Action, d.Resource, d.Decision)
	switch {
	case len(d.Statements) > 0:
		s += " by " + strings.Join(d.Statements, ", ")
	case d.Decision == string(iamtypes.PolicyEvaluationDecisionTypeImplicitDeny):
		s += " (no statement of the caller's policies allows it)"
	}
	return s
}

// ErrCannotSimulate is a caller that may not be simulated: the account's
// root (which may do everything), a federated user, or one not allowed
// iam:SimulatePrincipalPolicy.
var ErrCannotSimulate = errors.New("the caller's permissions cannot be simulated")

// SimulationSource is the IAM ARN whose policies SimulatePrincipalPolicy
// evaluates for a caller (sts GetCallerIdentity's ARN): a user as it is,
// an assumed role's role (the role's path is not in the session's ARN: a
// role with a path is found only with iam:GetRole, which validate does not
// ask for), or ErrCannotSimulate.
func SimulationSource(callerARN string) (string, error) {
	parts := strings.SplitN(callerARN, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return "", fmt.Errorf("%w: %q is not an ARN", ErrCannotSimulate, callerARN)
	}
	res := parts[5]
	switch {
	case parts[2] == "iam" && strings.HasPrefix(res, "user/"):
		return callerARN, nil
	case parts[2] == "iam" && res == "root":
		return "", fmt.Errorf("%w: the account's root user may do everything (and should not bake)", ErrCannotSimulate)
	case parts[2] == "sts" && strings.HasPrefix(res, "assumed-role/"):
		role := strings.SplitN(strings.TrimPrefix(res, "assumed-role/"), "/", 2)[0]
		return fmt.Sprintf("arn:%s:iam::%s:role/%s", parts[1], parts[4], role), nil
	}
	return "", fmt.Errorf("%w: %s is neither an IAM user nor an assumed role", ErrCannotSimulate, callerARN)
}

// SimulatePermissions asks IAM whether source may take each permission
// and returns every action and resource it may not. A caller not allowed
// to simulate, or whose identity cannot be, is ErrCannotSimulate.
func SimulatePermissions(ctx context.Context, api SimulateAPI, source string, perms []Permission) ([]Denial, error) {
	var denied []Denial
	for _, p := range perms {
		pg := awsiam.NewSimulatePrincipalPolicyPaginator(api, &awsiam.SimulatePrincipalPolicyInput{
			PolicySourceArn: aws.String(source), ActionNames: []string{p.Action}, ResourceArns: p.Resources,
		})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if awserr.Denied(err) || awserr.NotFound(err) {
				return nil, fmt.Errorf("%w: %v", ErrCannotSimulate, err)
			}
			if err != nil {
				return nil, fmt.Errorf("simulating %s for %s: %w", p.Action, source, err)
			}
			for _, r := range out.EvaluationResults {
				if len(r.ResourceSpecificResults) == 0 {
					denied = appendDenial(denied, aws.ToString(r.EvalActionName), aws.ToString(r.EvalResourceName), r.EvalDecision, r.MatchedStatements)
					continue
				}
				for _, rr := range r.ResourceSpecificResults {
					denied = appendDenial(denied, aws.ToString(r.EvalActionName), aws.ToString(rr.EvalResourceName), rr.EvalResourceDecision, rr.MatchedStatements)
				}
			}
		}
	}
	return denied, nil
}

func appendDenial(denied []Denial, action, resource string, d iamtypes.PolicyEvaluationDecisionType, matched []iamtypes.Statement) []Denial {
	if d == iamtypes.PolicyEvaluationDecisionTypeAllowed {
		return denied
	}
	den := Denial{Action: action, Resource: resource, Decision: string(d)}
	for _, m := range matched {
		st := "policy " + aws.ToString(m.SourcePolicyId)
		if p := m.StartPosition; p != nil && p.Line > 0 {
			st += fmt.Sprintf(" (the statement at line %d, column %d)", p.Line, p.Column)
		}
		den.Statements = append(den.Statements, st)
	}
	return append(denied, den)
}
