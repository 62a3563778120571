package bake

// Preflight: what is checked before anything costs money.

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/fleet"
)

func preflight(ctx context.Context, s *State) error {
	cfg := s.opts.Config
	id, err := s.opts.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("checking AWS credentials (sts GetCallerIdentity): %w", err)
	}
	s.CallerARN = aws.ToString(id.Arn)
	s.labels.Creator = s.CallerARN

	cidr, err := sshCIDR(cfg.AWS.SSHCIDR, s.opts.Endpoint)
	if err != nil {
		return err
	}
	s.SSHCIDR = cidr

	// The previous AMI of this worker: the one the result replaces, and
	// the start of a refresh.
	prev, err := s.newestOwn(ctx)
	if err != nil {
		return err
	}
	if prev != nil {
		s.Replaces = aws.ToString(prev.ImageId)
	}
	var base *types.Image
	switch {
	case s.opts.FromPrevious:
		if prev == nil {
			return fmt.Errorf("%w: --from-previous, but no available AMI tagged %s=%s was made by latentworker", ErrNoBaseImage, fleet.TagWorker, cfg.Worker.Name)
		}
		base = prev
	case cfg.Image.BaseAMI != "":
		out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{cfg.Image.BaseAMI}})
		if err != nil {
			return fmt.Errorf("describing base image %s: %w", cfg.Image.BaseAMI, err)
		}
		if len(out.Images) == 0 {
			return fmt.Errorf("%w: %s does not exist in this region", ErrNoBaseImage, cfg.Image.BaseAMI)
		}
		base = &out.Images[0]
	default:
		owner, name := cfg.Image.EffectiveBase()
		out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
			Owners: []string{owner},
			Filters: []types.Filter{
				{Name: aws.String("name"), Values: []string{name}},
				{Name: aws.String("state"), Values: []string{"available"}},
			},
		})
		if err != nil {
			return fmt.Errorf("finding base image (owner %s, name %s): %w", owner, name, err)
		}
		base = newest(out.Images)
		if base == nil {
			return fmt.Errorf("%w: none owned by %s named %s in this region (the base image of platform %s)", ErrNoBaseImage, owner, name, s.Platform.Name)
		}
	}
	s.BaseAMI, s.BaseName = aws.ToString(base.ImageId), aws.ToString(base.Name)
	s.RootDevice = aws.ToString(base.RootDeviceName)
	if s.RootDevice == "" {
		s.RootDevice = "/dev/xvda"
	}
	s.labels.SourceAMI = s.BaseAMI
	s.labels.Replaces = s.Replaces

	it, err := s.opts.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(cfg.AWS.InstanceType)}})
	if err != nil {
		return fmt.Errorf("describing instance type %s: %w", cfg.AWS.InstanceType, err)
	}
	if len(it.InstanceTypes) == 0 {
		return fmt.Errorf("%w: %s is not offered in this region", ErrUnfitInstance, cfg.AWS.InstanceType)
	}
	ti := it.InstanceTypes[0]
	arch := string(base.Architecture)
	var archs []string
	ok := false
	if ti.ProcessorInfo != nil {
		for _, a := range ti.ProcessorInfo.SupportedArchitectures {
			archs = append(archs, string(a))
			ok = ok || string(a) == arch
		}
	}
	if !ok {
		return fmt.Errorf("%w: %s is %s, %s supports %v", ErrUnfitInstance, s.BaseAMI, arch, cfg.AWS.InstanceType, archs)
	}
	if ti.VCpuInfo == nil || aws.ToInt32(ti.VCpuInfo.DefaultVCpus) < minVCPUs {
		return fmt.Errorf("%w: %s has fewer than %d vCPUs", ErrUnfitInstance, cfg.AWS.InstanceType, minVCPUs)
	}
	if ti.MemoryInfo == nil || aws.ToInt64(ti.MemoryInfo.SizeInMiB) < minMemMiB {
		return fmt.Errorf("%w: %s has less than %d MiB of memory", ErrUnfitInstance, cfg.AWS.InstanceType, minMemMiB)
	}
	return nil
}

// sshCIDR is the configured CIDR, or 127.0.0.1/32 for a loopback endpoint.
func sshCIDR(configured, endpoint string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if endpoint != "" {
		if u, err := url.Parse(endpoint); err == nil {
			host := u.Hostname()
			if host == "localhost" {
				return "127.0.0.1/32", nil
			}
			if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
				return "127.0.0.1/32", nil
			}
		}
	}
	return "", fmt.Errorf("%w: set it to your public address as a /32 (e.g. 203.0.113.7/32); latentworker does not ask an internet service for it", ErrNoSSHCIDR)
}

// newest returns the image created last, or nil.
func newest(images []types.Image) *types.Image {
	if len(images) == 0 {
		return nil
	}
	sort.SliceStable(images, func(i, j int) bool {
		return aws.ToString(images[i].CreationDate) < aws.ToString(images[j].CreationDate)
	})
	return &images[len(images)-1]
}

// newestOwn returns the newest available AMI this tool baked for the worker.
func (s *State) newestOwn(ctx context.Context) (*types.Image, error) {
	w := s.opts.Config.Worker.Name
	out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + fleet.TagWorker), Values: []string{w}},
			{Name: aws.String("tag:" + fleet.TagRole), Values: []string{string(fleet.RoleImage)}},
			{Name: aws.String("state"), Values: []string{"available"}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("finding previous AMIs of worker %s: %w", w, err)
	}
	return newest(out.Images), nil
}
