package cleanup

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2API is the part of the EC2 client the package uses. *ec2.Client
// implements it.
type EC2API interface {
	DescribeRegions(context.Context, *ec2.DescribeRegionsInput, ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DeleteKeyPair(context.Context, *ec2.DeleteKeyPairInput, ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// ClientFunc returns the EC2 client for a region. Region "" is the
// configuration's default region; it is used only to ask DescribeRegions
// when Options.Regions is empty.
type ClientFunc func(region string) EC2API

// Calls counts API calls by operation name. One call is one method call on
// EC2API: the SDK's retries of that call are not counted again. The zero
// value is ready to use and safe for concurrent use.
type Calls struct {
	mu sync.Mutex
	n  map[string]int64
	t  atomic.Int64
}

func (c *Calls) add(op string) {
	c.t.Add(1)
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int64{}
	}
	c.n[op]++
	c.mu.Unlock()
}

// Total returns the number of calls counted.
func (c *Calls) Total() int64 { return c.t.Load() }

// ByOperation returns a copy of the counts, keyed by EC2 operation name.
func (c *Calls) ByOperation() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// Counting wraps api so that every call is counted in c.
func Counting(api EC2API, c *Calls) EC2API { return &counting{api: api, c: c} }

type counting struct {
	api EC2API
	c   *Calls
}

func (x *counting) DescribeRegions(ctx context.Context, in *ec2.DescribeRegionsInput, o ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error) {
	x.c.add("DescribeRegions")
	return x.api.DescribeRegions(ctx, in, o...)
}

func (x *counting) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	x.c.add("DescribeInstances")
	return x.api.DescribeInstances(ctx, in, o...)
}

func (x *counting) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, o ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	x.c.add("DescribeImages")
	return x.api.DescribeImages(ctx, in, o...)
}

func (x *counting) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, o ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	x.c.add("DescribeSnapshots")
	return x.api.DescribeSnapshots(ctx, in, o...)
}

func (x *counting) DescribeKeyPairs(ctx context.Context, in *ec2.DescribeKeyPairsInput, o ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error) {
	x.c.add("DescribeKeyPairs")
	return x.api.DescribeKeyPairs(ctx, in, o...)
}

func (x *counting) DescribeSecurityGroups(ctx context.Context, in *ec2.DescribeSecurityGroupsInput, o ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	x.c.add("DescribeSecurityGroups")
	return x.api.DescribeSecurityGroups(ctx, in, o...)
}

func (x *counting) TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, o ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	x.c.add("TerminateInstances")
	return x.api.TerminateInstances(ctx, in, o...)
}

func (x *counting) DeleteKeyPair(ctx context.Context, in *ec2.DeleteKeyPairInput, o ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error) {
	x.c.add("DeleteKeyPair")
	return x.api.DeleteKeyPair(ctx, in, o...)
}

func (x *counting) DeleteSecurityGroup(ctx context.Context, in *ec2.DeleteSecurityGroupInput, o ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error) {
	x.c.add("DeleteSecurityGroup")
	return x.api.DeleteSecurityGroup(ctx, in, o...)
}

func (x *counting) DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, o ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	x.c.add("DeregisterImage")
	return x.api.DeregisterImage(ctx, in, o...)
}

func (x *counting) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, o ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	x.c.add("DeleteSnapshot")
	return x.api.DeleteSnapshot(ctx, in, o...)
}
