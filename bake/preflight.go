package bake

// Preflight: what is checked before anything costs money.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/config"
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
		if c := awserr.Code(err); awserr.NotFound(err) || c == "InvalidAMIID.Malformed" {
			return fmt.Errorf("%w: image.base_ami %s does not exist in this region (%s)", ErrNoBaseImage, cfg.Image.BaseAMI, c)
		}
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
			return fmt.Errorf("%w: none owned by %s named %s in this region (image.platform %s, image.base_owner, image.base_name)", ErrNoBaseImage, owner, name, s.Platform.Name)
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
	if c := awserr.Code(err); c == "InvalidInstanceType" || c == "InvalidParameterValue" {
		return fmt.Errorf("%w: aws.instance_type %s is not an instance type this region offers (%s)", ErrUnfitInstance, cfg.AWS.InstanceType, c)
	}
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
	// Only Nitro instances give the latest console output; unknown: ask,
	// and do without it when refused.
	s.ConsoleLatest = ti.Hypervisor != types.InstanceTypeHypervisorXen
	if err := checkRootVolume(base, s.RootDevice, cfg.Image.RootVolumeGiB); err != nil {
		return err
	}
	if err := s.network(ctx); err != nil {
		return err
	}
	if err := s.checkKMSKeys(ctx); err != nil {
		return err
	}
	return s.checkCopyRegions(ctx)
}

// ErrRootVolume is an image.root_volume_gib smaller than the base image's
// root snapshot, which EC2 refuses at launch.
var ErrRootVolume = errors.New("the root volume is smaller than the base image's")

// checkRootVolume refuses a root volume smaller than the base image's root
// snapshot.
func checkRootVolume(base *types.Image, device string, gib int) error {
	for _, bd := range base.BlockDeviceMappings {
		if aws.ToString(bd.DeviceName) != device || bd.Ebs == nil {
			continue
		}
		if size := int(aws.ToInt32(bd.Ebs.VolumeSize)); size > gib {
			return fmt.Errorf("%w: image.root_volume_gib is %d, but the root snapshot of %s is %d GiB: set image.root_volume_gib to %d or more",
				ErrRootVolume, gib, aws.ToString(base.ImageId), size, size)
		}
	}
	return nil
}

// checkKMSKeys checks image.kms_key_id where it is used: in the run's region
// (the builder's volume) and, when it is an alias, in each copy's region.
// EC2 itself would find a missing or disabled key only after the launch, or
// after the whole bake for a copy. A caller that may not describe keys
// (kms:DescribeKey) may still use them through EC2: that is not checked.
func (s *State) checkKMSKeys(ctx context.Context) error {
	cfg := s.opts.Config
	if cfg.Image.KMSKeyID == "" || s.opts.RegionKMS == nil {
		return nil
	}
	regions := []string{s.Region}
	if _, ok := config.KMSAlias(cfg.Image.KMSKeyID); ok {
		regions = append(regions, cfg.AWS.CopyToRegions...)
	}
	for _, r := range regions {
		key := cfg.Image.KMSKeyID
		if r != s.Region {
			key = aws.ToString(copyKMSKey(cfg))
		}
		out, err := s.opts.RegionKMS(r).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
		switch {
		case awserr.Code(err) == "NotFoundException":
			return fmt.Errorf("%w: %s does not exist in %s", ErrBadKMSKey, key, r)
		case awserr.Code(err) == "AccessDeniedException":
			s.emit(Event{Type: EventProgress, Step: StepPreflight, Percent: -1,
				Message: fmt.Sprintf("not checking KMS key %s in %s: this caller may not describe it (kms:DescribeKey)", key, r)})
			continue
		case err != nil:
			return fmt.Errorf("describing KMS key %s in %s: %w", key, r, err)
		}
		md := out.KeyMetadata
		if md.KeyState != kmstypes.KeyStateEnabled {
			return fmt.Errorf("%w: %s in %s is %s, not Enabled", ErrBadKMSKey, key, r, md.KeyState)
		}
		// EBS encrypts only with symmetric encryption keys.
		if md.KeyUsage != "" && md.KeyUsage != kmstypes.KeyUsageTypeEncryptDecrypt || md.KeySpec != "" && md.KeySpec != kmstypes.KeySpecSymmetricDefault {
			return fmt.Errorf("%w: %s in %s is a %s key for %s; EBS needs a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)", ErrBadKMSKey, key, r, md.KeySpec, md.KeyUsage)
		}
	}
	return nil
}

// loopback reports whether endpoint is on this machine (the lab).
func loopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if endpoint == "" || err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(u.Hostname())
	return err == nil && a.IsLoopback()
}

// sshCIDR is the configured CIDR, or 127.0.0.1/32 for a loopback endpoint.
func sshCIDR(configured, endpoint string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if loopback(endpoint) {
		return "127.0.0.1/32", nil
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

// preflightResume checks the credentials and finds the image of the run
// being resumed (Options.Resume): owned by this account, tagged with that
// run's ID as its image, of this worker. None is ErrNothingToResume (bad
// input). A released or handed-off image is a finished run: the resume
// ends here having changed nothing (State.Finished). A verified one (an
// earlier attempt booted it) is never at stake again. Any other image
// becomes this run's product once its wait starts (waitResumedImage):
// rolled back if it fails its verification, kept if still pending.
func preflightResume(ctx context.Context, s *State) error {
	id, err := s.opts.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("checking AWS credentials (sts GetCallerIdentity): %w", err)
	}
	s.CallerARN = aws.ToString(id.Arn)
	s.labels.Creator = s.CallerARN
	if s.SSHCIDR, err = sshCIDR(s.opts.Config.AWS.SSHCIDR, s.opts.Endpoint); err != nil {
		return err
	}
	// The verify instance runs where the builder did.
	if err := s.network(ctx); err != nil {
		return err
	}
	s.ConsoleLatest = true
	out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			fleet.RunFilter(s.RunID),
			{Name: aws.String("tag:" + fleet.TagRole), Values: []string{string(fleet.RoleImage)}},
		},
	})
	if err != nil {
		return fmt.Errorf("finding the image of run %s: %w", s.RunID, err)
	}
	var imgs []types.Image
	for _, im := range out.Images {
		if tagValue(im.Tags, fleet.TagCopyOf) == "" && im.State != types.ImageStateDeregistered {
			imgs = append(imgs, im)
		}
	}
	switch len(imgs) {
	case 0:
		return fmt.Errorf("%w: run %s has no image owned by this account in %s (a run that failed before its image was made or verified removed it; is the region right?)", ErrNothingToResume, s.RunID, s.Region)
	case 1:
	default:
		return fmt.Errorf("run %s has %d images in %s; want 1", s.RunID, len(imgs), s.Region)
	}
	im := imgs[0]
	if w := tagValue(im.Tags, fleet.TagWorker); w != s.opts.Config.Worker.Name {
		return fmt.Errorf("%w: run %s baked worker %q, not %q (worker.name)", ErrNothingToResume, s.RunID, w, s.opts.Config.Worker.Name)
	}
	s.ImageID, s.ImageName = aws.ToString(im.ImageId), aws.ToString(im.Name)
	s.SnapshotIDs = imageSnapshots(im)
	s.BaseAMI = tagValue(im.Tags, fleet.TagSourceAMI)
	s.Replaces = tagValue(im.Tags, fleet.TagReplaces)
	if m := ImageMaster(im); m != "" {
		s.Master = m
	}
	s.RootDevice = aws.ToString(im.RootDeviceName)
	if s.RootDevice == "" {
		s.RootDevice = "/dev/xvda"
	}
	s.labels.SourceAMI, s.labels.Replaces, s.labels.Master = s.BaseAMI, s.Replaces, s.Master
	s.verifiedBoot = tagValue(im.Tags, fleet.TagVerified) != ""
	if ready, handed := tagValue(im.Tags, fleet.TagReady), tagValue(im.Tags, fleet.TagHandedOff); ready != "" || handed != "" {
		// Completed before: change nothing, report it.
		s.Finished, s.ImageVerified, s.ReadySince = true, true, cmp.Or(ready, handed)
		s.emit(Event{Type: EventProgress, Step: StepPreflight, Percent: -1, Message: fmt.Sprintf("run %s finished already: image %s is released (%s); nothing to do", s.RunID, s.ImageID, s.ReadySince)})
		return s.findCopies(ctx)
	}
	if s.verifiedBoot {
		s.ImageVerified = true // an earlier attempt verified it: never at stake again
		return nil
	}
	s.resumedImage = true
	return nil
}

// ImageMaster returns the buildmaster host:port baked into im: its
// fleet.TagMaster, or for an image baked before that tag, what its
// description names ("... (master HOST:PORT), baked by ..."); "" if
// neither says.
func ImageMaster(im types.Image) string {
	if m := tagValue(im.Tags, fleet.TagMaster); m != "" {
		return m
	}
	d := aws.ToString(im.Description)
	_, rest, ok := strings.Cut(d, " (master ")
	if !ok {
		return ""
	}
	m, _, ok := strings.Cut(rest, ")")
	if !ok || strings.ContainsAny(m, " \t") {
		return ""
	}
	return m
}

// findCopies finds the copies of the run's image in aws.copy_to_regions
// (tagged fleet.TagCopyOf), for a finished run's report.
func (s *State) findCopies(ctx context.Context) error {
	if s.opts.RegionEC2 == nil {
		return nil
	}
	for _, r := range s.opts.Config.AWS.CopyToRegions {
		c, err := s.existingCopy(ctx, r)
		if err != nil {
			return err
		}
		if c != nil {
			s.Copies = append(s.Copies, c)
		}
	}
	return nil
}

// tagValue returns the value of tag key, or "".
func tagValue(tags []types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}
