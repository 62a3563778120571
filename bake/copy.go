package bake

// Copies of the verified image in other regions (aws.copy_to_regions).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
)

// ErrCopy is a copy of the image that did not become a verified AMI in its
// region.
var ErrCopy = errors.New("copying the image")

// Copy is the image copied to another region.
type Copy struct {
	Region      string
	ImageID     string
	SnapshotIDs []string
	Encrypted   bool
}

// copyKMSKey is the key that encrypts a copy: the configured key when it is
// an alias (the alias of that name in the copy's region), else nil, the
// copy region's default EBS key (a key ID or ARN belongs to one region).
func copyKMSKey(cfg *config.Config) *string {
	if a, ok := config.KMSAlias(cfg.Image.KMSKeyID); ok {
		return aws.String(a)
	}
	return nil
}

// copyImages copies the verified image to every region of
// aws.copy_to_regions, tagged at creation as the original plus where it
// comes from, each copy's undo pushed as its call returns; then waits for
// every copy to be available and checks it: its tags, and its snapshots
// encrypted when image.encrypted.
//
// A copy that fails (refused, failed, still pending at the end of the
// wait) is removed and recorded in CopyFailures; the others and the
// verified image go on: the run completes, and its error (ErrCopy) names
// each failure. Preflight has checked what it can of each region
// (checkCopyRegions); what is left is AWS's to say.
func copyImages(ctx context.Context, s *State) error {
	cfg := s.opts.Config
	if len(cfg.AWS.CopyToRegions) == 0 {
		return nil
	}
	if s.opts.RegionEC2 == nil {
		return errors.New("bake: Options.RegionEC2 is required with aws.copy_to_regions")
	}
	for _, r := range cfg.AWS.CopyToRegions {
		if r == s.Region {
			return fmt.Errorf("%w: aws.copy_to_regions names %s, the region the image is baked in", ErrCopy, r)
		}
	}
	tags := s.copyTags()
	undo := map[*Copy]*undoItem{}
	for _, r := range cfg.AWS.CopyToRegions {
		api := s.opts.RegionEC2(r)
		// An earlier attempt of the run (--resume) may have made it.
		c, err := s.existingCopy(ctx, r)
		if err != nil {
			return fmt.Errorf("%w %s to %s: %w", ErrCopy, s.ImageID, r, err)
		}
		if c != nil {
			s.emit(Event{Type: EventProgress, Step: StepCopyImage, Message: fmt.Sprintf("copy of %s in %s: %s, made by an earlier attempt", s.ImageID, r, c.ImageID)})
		} else {
			in := &ec2.CopyImageInput{
				SourceImageId: aws.String(s.ImageID),
				SourceRegion:  aws.String(s.Region),
				Name:          aws.String(s.ImageName),
				Description:   aws.String(fmt.Sprintf("buildbot latent worker %s (master %s), baked by latentworker run %s; copy of %s in %s", cfg.Worker.Name, s.Master, s.RunID, s.ImageID, s.Region)),
				// The same token on the SDK's retries: a copy whose answer
				// was lost is answered again, not made twice. The attempt
				// is part of it: a resume's copy is not an earlier one's.
				ClientToken: aws.String(s.RunID + "-copy-" + r + "-" + s.attempt),
				TagSpecifications: []types.TagSpecification{
					{ResourceType: types.ResourceTypeImage, Tags: fleet.TagList(tags)},
					{ResourceType: types.ResourceTypeSnapshot, Tags: fleet.TagList(s.copySnapshotTags())},
				},
			}
			if cfg.Image.IsEncrypted() {
				in.Encrypted = aws.Bool(true)
				in.KmsKeyId = copyKMSKey(cfg)
			}
			out, err := api.CopyImage(s.creating(ctx), in)
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if err != nil {
				s.copyFailed(r, fmt.Errorf("%w %s to %s: %w", ErrCopy, s.ImageID, r, err))
				continue
			}
			c = &Copy{Region: r, ImageID: aws.ToString(out.ImageId)}
			s.emit(Event{Type: EventProgress, Step: StepCopyImage, Message: fmt.Sprintf("copying %s to %s as %s", s.ImageID, r, c.ImageID)})
		}
		s.Copies = append(s.Copies, c)
		id := c.ImageID
		undo[c] = s.undo.push(KindImage, "image copy", id, s.cmdIn(r, "deregister-image --image-id %s", id)+" (then delete its snapshots: "+s.cmdIn(r, "describe-snapshots --filters Name=tag:%s,Values=%s", fleet.TagRunID, s.RunID)+")", func(ctx context.Context) error {
			return s.deleteImageIn(ctx, api, r, id, c.SnapshotIDs)
		})
		if err := context.Cause(ctx); err != nil {
			return err
		}
	}
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Image)
	defer cancel()
	var ok []*Copy
	for _, c := range s.Copies {
		err := s.waitCopy(wctx, c, tags)
		if err == nil {
			ok = append(ok, c)
			// Available and checked, of a verified image: like the
			// image, never removed again.
			if s.ImageVerified {
				s.undo.keepID(c.ImageID)
			}
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("still pending after %s: %w", s.opts.Timeouts.Image, err)
		}
		s.copyFailed(c.Region, fmt.Errorf("%w %s to %s (%s): %w", ErrCopy, s.ImageID, c.Region, c.ImageID, err))
		// A copy that is not the product is removed now; its undo stays
		// on the stack, to be tried again, if that fails.
		if rerr := s.undo.runNow(context.WithoutCancel(ctx), undo[c]); rerr != nil {
			s.warn(StepCopyImage, fmt.Sprintf("removing the failed copy %s in %s: %v (tried again at the end)", c.ImageID, c.Region, rerr))
		}
	}
	s.Copies = ok
	return nil
}

// copyFailed records that the copy to region failed and says so.
func (s *State) copyFailed(region string, err error) {
	err = fmt.Errorf("%w; copy it once the cause is fixed: %s", err,
		s.cmdIn(region, "copy-image --source-region %s --source-image-id %s --name %s", s.Region, s.ImageID, s.ImageName))
	s.CopyFailures = append(s.CopyFailures, CopyFailure{Region: region, Err: err})
	s.warn(StepCopyImage, err.Error()+"; the image is kept, the other copies go on")
}

// CopyFailure is a copy of the verified image that did not succeed: the
// run still completes with the image (and its other copies).
type CopyFailure struct {
	Region string
	Err    error
}

// copyError joins the copy failures (nil: none).
func (s *State) copyError() error {
	var errs []error
	for _, f := range s.CopyFailures {
		errs = append(errs, f.Err)
	}
	return errors.Join(errs...)
}

// existingCopy returns the copy of the run's image in region r that is
// pending or available (tagged fleet.TagCopyOf), or nil.
func (s *State) existingCopy(ctx context.Context, r string) (*Copy, error) {
	out, err := s.opts.RegionEC2(r).DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + fleet.TagCopyOf), Values: []string{s.ImageID}},
			{Name: aws.String("state"), Values: []string{string(types.ImageStatePending), string(types.ImageStateAvailable)}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("finding copies of %s in %s: %w", s.ImageID, r, err)
	}
	if len(out.Images) == 0 {
		return nil, nil
	}
	im := newest(out.Images)
	return &Copy{Region: r, ImageID: aws.ToString(im.ImageId), SnapshotIDs: imageSnapshots(*im), Encrypted: encrypted(*im)}, nil
}

// copyTags are the tags of a copy: the run's image tags (run ID, worker,
// role, expiry, ...), so that sweep, --from-previous and retention in its
// region find it, plus where it comes from.
func (s *State) copyTags() map[string]string {
	m := s.labels.Map(fleet.RoleImage, s.ImageName)
	m[fleet.TagCopyOf] = s.ImageID
	m[fleet.TagSourceRegion] = s.Region
	return m
}

func (s *State) copySnapshotTags() map[string]string {
	m := s.labels.Map(fleet.RoleSnapshot, s.ImageName)
	m[fleet.TagCopyOf] = s.ImageID
	m[fleet.TagSourceRegion] = s.Region
	return m
}

// waitCopy waits for copy c to be available and checks it.
func (s *State) waitCopy(ctx context.Context, c *Copy, want map[string]string) error {
	api := s.opts.RegionEC2(c.Region)
	created := time.Now()
	last := ""
	return s.pollSchedule(ctx, TransCopy, c.ImageID, func() (bool, error) {
		out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{c.ImageID}})
		if awserr.NotFound(err) && time.Since(created) < consistencyWindow {
			return false, nil // not visible yet
		}
		if err != nil {
			return false, fmt.Errorf("describing image %s in %s: %w", c.ImageID, c.Region, err)
		}
		if len(out.Images) == 0 {
			return false, nil
		}
		im := out.Images[0]
		if sn := imageSnapshots(im); len(sn) > 0 {
			c.SnapshotIDs = sn
		}
		switch im.State {
		case types.ImageStateAvailable:
		case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
			reason := ""
			if im.StateReason != nil {
				reason = ": " + aws.ToString(im.StateReason.Message)
			}
			return false, fmt.Errorf("it is %s%s", im.State, reason)
		default:
			if msg := fmt.Sprintf("copy %s in %s is %s", c.ImageID, c.Region, im.State); msg != last {
				last = msg
				s.emit(Event{Type: EventProgress, Step: StepCopyImage, Percent: -1, Message: msg})
			}
			return false, nil
		}
		if err := checkCopy(im, want, s.opts.Config.Image.IsEncrypted()); err != nil {
			return false, err
		}
		c.Encrypted = encrypted(im)
		s.emit(Event{Type: EventProgress, Step: StepCopyImage, Percent: 100, Message: fmt.Sprintf("copy %s in %s is available", c.ImageID, c.Region)})
		return true, nil
	})
}

// checkCopy checks an available copy: public it must not be, it carries
// every tag in want, and its snapshots are encrypted when wantEncrypted.
func checkCopy(im types.Image, want map[string]string, wantEncrypted bool) error {
	if aws.ToBool(im.Public) {
		return fmt.Errorf("%w: %s", ErrPublicImage, aws.ToString(im.ImageId))
	}
	got := map[string]string{}
	for _, t := range im.Tags {
		got[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if k == fleet.TagExpires || k == fleet.TagCreator {
			continue // an earlier attempt's copy (--resume) has its own
		}
		if got[k] != want[k] {
			return fmt.Errorf("its tag %s is %q; want %q", k, got[k], want[k])
		}
	}
	if wantEncrypted && !encrypted(im) {
		return errors.New("its snapshots are not encrypted (image.encrypted)")
	}
	return nil
}

// encrypted reports whether every EBS volume of an image is encrypted.
func encrypted(im types.Image) bool {
	n := 0
	for _, bd := range im.BlockDeviceMappings {
		if bd.Ebs == nil {
			continue
		}
		if !aws.ToBool(bd.Ebs.Encrypted) {
			return false
		}
		n++
	}
	return n > 0
}

// ErrCopyRegion is a region of aws.copy_to_regions the image cannot be
// copied to: not enabled for the account, or denied to the caller.
var ErrCopyRegion = errors.New("the image cannot be copied there")

// checkCopyRegions checks, before anything is created, each region of
// aws.copy_to_regions: enabled for the account (an opt-in region must be
// turned on: EC2's DescribeRegions says) and a copy into it allowed (a
// CopyImage of the base image with DryRun, which an IAM policy or an
// organisation's SCP may deny). An answer that says neither (a caller
// that may not ask) is a warning: the copy step will tell.
func (s *State) checkCopyRegions(ctx context.Context) error {
	cfg := s.opts.Config
	if len(cfg.AWS.CopyToRegions) == 0 || s.opts.RegionEC2 == nil {
		return nil
	}
	out, err := s.opts.EC2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true), RegionNames: cfg.AWS.CopyToRegions})
	status := map[string]string{}
	switch {
	case err == nil:
		for _, r := range out.Regions {
			status[aws.ToString(r.RegionName)] = aws.ToString(r.OptInStatus)
		}
	case awserr.Denied(err):
		s.warn(StepPreflight, "not checking that the copy regions are enabled: this caller may not ask (ec2:DescribeRegions)")
	default:
		return fmt.Errorf("checking the copy regions (DescribeRegions): %w", err)
	}
	for i, r := range cfg.AWS.CopyToRegions {
		field := fmt.Sprintf("aws.copy_to_regions[%d] %s", i, r)
		if err == nil {
			st, listed := status[r]
			switch {
			case !listed:
				return fmt.Errorf("%w: %s is not a region of this account's partition", ErrCopyRegion, field)
			case st == "not-opted-in":
				return fmt.Errorf("%w: %s is an opt-in region that is not enabled for this account: enable it (aws account enable-region --region-name %s; it takes minutes to hours) or remove it", ErrCopyRegion, field, r)
			}
		}
		_, derr := s.opts.RegionEC2(r).CopyImage(ctx, &ec2.CopyImageInput{
			DryRun: aws.Bool(true), SourceImageId: aws.String(s.BaseAMI), SourceRegion: aws.String(s.Region),
			Name: aws.String("latentworker-preflight"), ClientToken: aws.String(s.RunID + "-preflight-" + r),
		})
		switch c := awserr.Code(derr); {
		case c == "DryRunOperation":
		case awserr.Denied(derr):
			return fmt.Errorf("%w: %s: this caller may not copy images there (%s; an IAM policy or the organisation's service control policy denies ec2:CopyImage in %s): remove it or ask for the permission", ErrCopyRegion, field, c, r)
		case c == "AuthFailure", c == "OptInRequired", c == "UnrecognizedClientException", c == "InvalidClientTokenId":
			return fmt.Errorf("%w: %s does not accept this account's requests (%s): an opt-in region not enabled (aws account enable-region --region-name %s) or not yet ready", ErrCopyRegion, field, c, r)
		default:
			s.warn(StepPreflight, fmt.Sprintf("could not check that %s takes a copy (CopyImage with DryRun: %v): the copy step will tell", r, derr))
		}
	}
	return nil
}
