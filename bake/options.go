package bake

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/config"
)

// EC2API is the subset of *ec2.Client that bake calls. A fake implements it
// only for failures the lab cannot produce.
type EC2API interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeInstanceTypes(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeVpcs(context.Context, *ec2.DescribeVpcsInput, ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error)
	DescribeInstanceTypeOfferings(context.Context, *ec2.DescribeInstanceTypeOfferingsInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error)
	DescribeRegions(context.Context, *ec2.DescribeRegionsInput, ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error)
	ImportKeyPair(context.Context, *ec2.ImportKeyPairInput, ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteKeyPair(context.Context, *ec2.DeleteKeyPairInput, ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
	StopInstances(context.Context, *ec2.StopInstancesInput, ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	CopyImage(context.Context, *ec2.CopyImageInput, ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	ModifyImageAttribute(context.Context, *ec2.ModifyImageAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// STSAPI is the subset of *sts.Client that bake calls.
type STSAPI interface {
	GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// KMSAPI is the part of the KMS client bake calls: whether the key that is
// to encrypt the volumes exists and can.
type KMSAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

var (
	_ EC2API = (*ec2.Client)(nil)
	_ STSAPI = (*sts.Client)(nil)
	_ KMSAPI = (*kms.Client)(nil)
)

// Timeouts bound the waits of a run. Zero fields take the defaults.
type Timeouts struct {
	Running time.Duration // an instance reaching running (default 5m)
	Console time.Duration // the host keys appearing on the console (default 3m)
	Connect time.Duration // SSH reaching a booted instance (default 5m)
	Reboot  time.Duration // one reboot (default 5m)
	Stop    time.Duration // the builder stopping (default 10m)
	Image   time.Duration // the image becoming available, in total (default: the platform's ImageWait)
	Verify  time.Duration // the worker service coming up on the throwaway (default 5m)
	Unwind  time.Duration // the whole undo (default 10m)
	// Poll is the longest wait between two polls of a state AWS changes
	// and the period of the waits' schedules (Schedule): default 250 ms
	// against a loopback endpoint, the lab; 15 s against AWS, never more
	// calls than a fixed 15 s poll. MinPoll is the shortest gap (default
	// 100 ms in the lab, 2 s).
	Poll    time.Duration
	MinPoll time.Duration
	Create  time.Duration // one create call, which a cancel does not interrupt (default 2m)
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Running, 5*time.Minute)
	def(&t.Console, 3*time.Minute)
	def(&t.Connect, 5*time.Minute)
	def(&t.Reboot, 5*time.Minute)
	def(&t.Stop, 10*time.Minute)
	def(&t.Verify, 5*time.Minute)
	def(&t.Unwind, 10*time.Minute)
	def(&t.Create, 2*time.Minute)
	def(&t.Poll, 15*time.Second)
	def(&t.MinPoll, min(2*time.Second, t.Poll))
	return t
}

// Options configure a run.
type Options struct {
	// Config is the validated configuration.
	Config *config.Config
	// Password is the worker password; it only ever reaches a script's
	// stdin on the instance.
	Password config.Secret

	EC2 EC2API
	STS STSAPI
	// Region is the region the clients use, for the manifest and the
	// cleanup commands.
	Region string
	// RegionEC2 returns the EC2 client of another region, for the copies
	// of aws.copy_to_regions (required with them).
	RegionEC2 func(region string) EC2API
	// RegionKMS returns the KMS client of a region ("" the run's): preflight
	// checks that image.kms_key_id names a usable key there and in every
	// copy's region. Nil: not checked (EC2 refuses a bad key later).
	RegionKMS func(region string) KMSAPI
	// Endpoint is the EC2 endpoint URL when it is not AWS's own ("" for
	// AWS). A loopback endpoint (the lab) lets the SSH CIDR default to
	// 127.0.0.1/32; otherwise aws.ssh_cidr must be set, because bake
	// never asks an internet service for the caller's address.
	Endpoint string

	// FromPrevious starts from the newest AMI this tool baked for the
	// worker instead of the base image.
	FromPrevious bool
	// Resume finishes run Resume, whose image was still pending when its
	// wait ran out (ResumeSteps): it waits for the image, verifies it and
	// writes the manifest, under that run's ID.
	Resume string
	// KeepOnFailure keeps the builder instance (and the security group
	// that lets SSH reach it) when the run fails.
	KeepOnFailure bool
	// DebugKey is a public key (authorized_keys line) added to the login
	// user's authorized_keys on a builder kept after a failure, so its
	// owner can log in to debug. Empty: none.
	DebugKey string
	// TerminateBuilder terminates the builder once the AMI is available;
	// by default it is left stopped.
	TerminateBuilder bool
	// NoVerify skips booting a throwaway instance from the new AMI.
	NoVerify bool
	// MaxReboots bounds the reboots after updates (default 3).
	MaxReboots int
	// Expiry is how long temporary resources are tagged to live before
	// sweep may remove them (default 24h).
	Expiry time.Duration
	// ManifestPath, when set, is where the manifest JSON is written (0644).
	ManifestPath string

	Timeouts Timeouts
	// Events receives progress; nil discards.
	Events Events
	// RunID overrides the generated run ID (tests).
	RunID string
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Steps, when set, replaces Steps() (tests stop a run at a step
	// boundary with it).
	Steps []Step
}
