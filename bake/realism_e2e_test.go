package bake_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/labtest"
)

// TestBakeUnderRealism bakes in a lab that behaves like a hard day on AWS
// in a fresh account of an organisation: 30 % of EC2 calls throttled, 10 %
// answered 500/503, 5 % carried out with their answer lost, new resources
// NotFound for 5 s, the console empty for 5 s after boot, a Xen instance
// type whose console refuses Latest; no default VPC, subnets that map no
// public IP, an account ID with a leading zero, an opt-in region not
// enabled, a region an SCP denies, a copy region where copies fail late,
// an instance type whose launches end terminated.
//
// First what preflight refuses, each bad input naming its key before
// anything is created (before, each failed after the key pair and group
// were made, or after the whole bake): no subnet where there is no default
// VPC, a subnet without public IPs, an IPv6 SSH CIDR in an IPv4 subnet,
// copies to a region not enabled and to a denied one. A launch that ends
// terminated names its state reason. Then the bake completes in the
// subnet with a public IP asked for; its copy to the failing region fails
// late, and the verified image is kept (the run completes, ErrCopy: exit 4
// on the command line), the failed copy removed; the image is verified by
// booting it (the worker comes up on its own), and nothing of the run is
// left but the image.
func TestBakeUnderRealism(t *testing.T) {
	e := setupWith(t, `image_pending = "5s"
[realism]
seed = 7
throttle = 0.3
server_errors = 0.1
lost_answers = 0.05
consistency = "5s"
console_delay = "5s"
latest_nitro_only = true
no_default_vpc = true
no_public_ips = true
account_id = "012345678901"
disabled_regions = ["ap-east-1"]
denied_regions = ["eu-central-1"]
failed_copies = ["`+copyRegion+`"]
insufficient_capacity = ["t3.micro"]
`)
	e.cfg.AWS.InstanceType = "t2.medium"
	e.cfg.Image.CPythonBuildDeps = false
	e.ec2 = ec2.NewFromConfig(e.lab.AWS, func(o *ec2.Options) { o.Retryer = awserr.NewRetryer() })
	ctx := context.Background()
	rec := &recorder{t: t, secret: e.password}
	subs, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-east-1a"}}}})
	if err != nil || len(subs.Subnets) == 0 {
		t.Fatalf("the subnet of us-east-1a: %v, %v", subs, err)
	}
	subnet := aws.ToString(subs.Subnets[0].SubnetId)
	check := func(t *testing.T, edit func(*config.Config), want error, words ...string) {
		t.Helper()
		cfg := *e.cfg
		edit(&cfg)
		opts := e.options(t, rec)
		opts.Config = &cfg
		opts.RegionEC2 = func(r string) bake.EC2API {
			return ec2.NewFromConfig(e.lab.AWS, func(o *ec2.Options) { o.Region = r; o.Retryer = awserr.NewRetryer() })
		}
		_, err := bake.Check(ctx, opts)
		if !errors.Is(err, want) {
			t.Fatalf("preflight = %v; want %v", err, want)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("preflight error %q does not say %q", err, w)
			}
		}
	}
	t.Run("refused in preflight, nothing created", func(t *testing.T) {
		check(t, func(c *config.Config) {}, bake.ErrNetwork, "aws.subnet_id", "no default VPC", "this region has subnet-")
		check(t, func(c *config.Config) { c.AWS.SubnetID = subnet }, bake.ErrNetwork, "no public IP", "aws.associate_public_ip", `aws.ssh_address = "private"`)
		check(t, func(c *config.Config) { c.AWS.SubnetID, c.AWS.SSHCIDR = subnet, "2001:db8::/48" }, bake.ErrNetwork, "aws.ssh_cidr", "no IPv6 CIDR block")
		check(t, func(c *config.Config) { c.AWS.SubnetID, c.AWS.SSHAddress = subnet, config.SSHPrivate }, nil)
		public := func(c *config.Config) { c.AWS.SubnetID, c.AWS.AssociatePublicIP = subnet, true }
		check(t, public, nil)
		check(t, func(c *config.Config) { public(c); c.AWS.CopyToRegions = []string{"ap-east-1"} }, bake.ErrCopyRegion, "aws.copy_to_regions[0] ap-east-1", "not enabled", "enable-region")
		check(t, func(c *config.Config) { public(c); c.AWS.CopyToRegions = []string{"eu-central-1"} }, bake.ErrCopyRegion, "aws.copy_to_regions[0] eu-central-1", "UnauthorizedOperation")
		kps, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
		sgs, err2 := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{fleet.TagRunID}}}})
		if err != nil || err2 != nil || len(kps.KeyPairs) != 0 || len(sgs.SecurityGroups) != 0 {
			t.Errorf("after preflight: key pairs %v, groups %v (%v, %v); want none", kps, sgs, err, err2)
		}
	})
	e.cfg.AWS.SubnetID, e.cfg.AWS.AssociatePublicIP = subnet, true

	t.Run("a launch that ends terminated names its reason", func(t *testing.T) {
		cfg := *e.cfg
		cfg.AWS.InstanceType = "t3.micro"
		opts := e.options(t, rec)
		opts.Config = &cfg
		res, err := bake.Run(ctx, opts)
		if err == nil || !strings.Contains(err.Error(), "Server.InsufficientInstanceCapacity") {
			t.Fatalf("bake with t3.micro = %v; want the state reason Server.InsufficientInstanceCapacity", err)
		}
		for _, l := range labtest.RunResources(t, e.ec2, res.Manifest.RunID) {
			if !strings.Contains(l, "terminated") {
				t.Errorf("run %s left %s", res.Manifest.RunID, l)
			}
		}
	})

	opts := e.options(t, rec)
	opts.TerminateBuilder = true
	e.cfg.AWS.CopyToRegions = []string{copyRegion}
	opts.RegionEC2 = func(r string) bake.EC2API {
		return ec2.NewFromConfig(e.lab.AWS, func(o *ec2.Options) { o.Region = r; o.Retryer = awserr.NewRetryer() })
	}
	start := time.Now()
	res, err := bake.Run(ctx, opts)
	if !errors.Is(err, bake.ErrCopy) || res == nil || !res.Completed {
		t.Fatalf("bake under realism = %v; want it complete, with the copy to %s failed (ErrCopy)", err, copyRegion)
	}
	t.Logf("bake under realism took %s: %s; %v", time.Since(start).Round(time.Second), res.Manifest.ImageID, err)
	if len(res.Manifest.Copies) != 0 || res.Manifest.CopyFailures[copyRegion] == "" {
		t.Errorf("manifest copies %v, failures %v; want the %s copy failed and none kept", res.Manifest.Copies, res.Manifest.CopyFailures, copyRegion)
	}
	if id, err := e.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil || !strings.HasPrefix(aws.ToString(id.Account), "0") {
		t.Errorf("the lab's account = %v, %v; want one with a leading zero", id, err)
	}
	// Asked with the same retry policy: the lab still throttles.
	for _, l := range labtest.RunResources(t, e.ec2, res.Manifest.RunID) {
		if !strings.HasPrefix(l, "image ") && !strings.HasPrefix(l, "snapshot ") && !strings.Contains(l, "terminated") {
			t.Errorf("run %s left %s", res.Manifest.RunID, l)
		}
	}
	for _, l := range labtest.RunResources(t, opts.RegionEC2(copyRegion).(*ec2.Client), res.Manifest.RunID) {
		t.Errorf("the failed copy left %s in %s", l, copyRegion)
	}
	if !res.Manifest.Verified {
		t.Errorf("manifest %+v: not verified; want the image booted and its worker up", res.Manifest)
	}
}
