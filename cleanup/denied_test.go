package cleanup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// deniedRegion is a region an organisation's SCP denies: every call answers
// UnauthorizedOperation. moto has no SCPs, so this is a fake, and only of
// the denial; the other region is moto's.
type deniedRegion struct{}

var errSCP = &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation. (explicit deny in a service control policy)"}

func (deniedRegion) DescribeRegions(context.Context, *ec2.DescribeRegionsInput, ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	return nil, errSCP
}

func (deniedRegion) TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DeleteKeyPair(context.Context, *ec2.DeleteKeyPairInput, ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	return nil, errSCP
}

func (deniedRegion) DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	return nil, errSCP
}

// TestDeniedRegionIsAWarning: a sweep across an organisation reports the
// denied region as a warning and searches the others.
func TestDeniedRegionIsAWarning(t *testing.T) {
	url := mototest.Start(t)
	clients, _ := motoClients(url)
	withDenied := func(region string) EC2API {
		if region == "eu-west-1" {
			return deniedRegion{}
		}
		return clients(region)
	}
	rep, err := Find(context.Background(), withDenied, Options{Regions: []string{"us-east-1", "eu-west-1"}, MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("Find = %v; want the denied region as a warning, not an error", err)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "region eu-west-1 was not searched: access denied") {
		t.Errorf("warnings = %q; want one for eu-west-1", rep.Warnings)
	}
}
