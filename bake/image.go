package bake

// The image: creating it, waiting for it, booting it to verify it.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/provision"
)

func createImage(ctx context.Context, s *State) error {
	cfg := s.opts.Config
	s.ImageName = fleet.AMIName(cfg.Image.NamePrefix, cfg.Worker.Name, s.now())
	desc := fmt.Sprintf("buildbot latent worker %s (master %s), baked by latentworker run %s from %s", cfg.Worker.Name, s.Master, s.RunID, s.BaseAMI)
	out, err := s.opts.EC2.CreateImage(s.creating(ctx), &ec2.CreateImageInput{
		InstanceId:  aws.String(s.InstanceID),
		Name:        aws.String(s.ImageName),
		Description: aws.String(desc),
		TagSpecifications: []types.TagSpecification{
			s.labels.Spec(types.ResourceTypeImage, fleet.RoleImage, s.ImageName),
			s.labels.Spec(types.ResourceTypeSnapshot, fleet.RoleSnapshot, s.ImageName),
		},
	})
	var id string
	switch {
	case awserr.Code(err) == "InvalidAMIName.Duplicate":
		// Created, its answer lost, and found by the SDK's retry.
		if id, err = s.adoptImage(ctx, s.ImageName); err != nil {
			return fmt.Errorf("creating image %s from instance %s: %w", s.ImageName, s.InstanceID, err)
		}
	case err != nil:
		return fmt.Errorf("creating image %s from instance %s: %w", s.ImageName, s.InstanceID, err)
	default:
		id = aws.ToString(out.ImageId)
	}
	s.ImageID = id
	s.pushImageUndo(id)
	return nil
}

// pushImageUndo makes image id the run's product: rolled back when the run
// fails, kept when it completes or when the image is still pending at the
// end of the wait (ImagePending).
func (s *State) pushImageUndo(id string) {
	s.undo.push(KindImage, "image", id, s.cmd("deregister-image --image-id %s", id)+" (then delete its snapshots: "+s.cmd("describe-snapshots --filters Name=tag:%s,Values=%s", fleet.TagRunID, s.RunID)+")", func(ctx context.Context) error {
		return s.deleteImage(ctx, id)
	})
}

// deleteImage deregisters image id and deletes its snapshots: those the run
// saw, those the image names and those tagged with the run ID.
func (s *State) deleteImage(ctx context.Context, id string) error {
	return s.deleteImageIn(ctx, s.opts.EC2, s.Region, id, s.SnapshotIDs)
}

// deleteImageIn deregisters image id through api (region's client) and
// deletes its snapshots: known, those the image names and those in region
// tagged with the run ID.
func (s *State) deleteImageIn(ctx context.Context, api EC2API, region, id string, known []string) error {
	snaps := map[string]bool{}
	for _, sn := range known {
		snaps[sn] = true
	}
	if out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}); err == nil {
		for _, im := range out.Images {
			for _, sn := range imageSnapshots(im) {
				snaps[sn] = true
			}
		}
	}
	_, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
	if err != nil && !awserr.NotFound(err) {
		return fmt.Errorf("deregistering image %s in %s: %w", id, region, err)
	}
	if out, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"}, Filters: []types.Filter{fleet.RunFilter(s.RunID)},
	}); err == nil {
		for _, sn := range out.Snapshots {
			snaps[aws.ToString(sn.SnapshotId)] = true
		}
	}
	var errs []error
	for sn := range snaps {
		_, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sn)})
		if err != nil && !awserr.NotFound(err) {
			errs = append(errs, fmt.Errorf("deleting snapshot %s (%s): %w", sn, s.cmdIn(region, "delete-snapshot --snapshot-id %s", sn), err))
		}
	}
	return errors.Join(errs...)
}

func imageSnapshots(im types.Image) []string {
	var ids []string
	for _, bd := range im.BlockDeviceMappings {
		if bd.Ebs != nil && aws.ToString(bd.Ebs.SnapshotId) != "" {
			ids = append(ids, aws.ToString(bd.Ebs.SnapshotId))
		}
	}
	return ids
}

func waitImage(ctx context.Context, s *State) error {
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Image)
	defer cancel()
	last := -2
	created := time.Now()
	err := s.pollSchedule(wctx, TransImage, s.ImageID, func() (bool, error) {
		out, err := s.opts.EC2.DescribeImages(wctx, &ec2.DescribeImagesInput{ImageIds: []string{s.ImageID}})
		if awserr.NotFound(err) && time.Since(created) < consistencyWindow {
			return false, nil // not visible yet
		}
		if err != nil {
			return false, fmt.Errorf("describing image %s: %w", s.ImageID, err)
		}
		if len(out.Images) == 0 {
			return false, nil // not visible yet
		}
		im := out.Images[0]
		if aws.ToBool(im.Public) {
			return false, fmt.Errorf("%w: %s; make it private (%s) before anything else", ErrPublicImage, s.ImageID, s.cmd("modify-image-attribute --image-id %s --launch-permission Remove=[{Group=all}]", s.ImageID))
		}
		if sn := imageSnapshots(im); len(sn) > 0 {
			s.SnapshotIDs = sn
		}
		switch im.State {
		case types.ImageStateAvailable:
			s.emit(Event{Type: EventProgress, Step: StepWaitImage, Percent: 100, Message: "image " + s.ImageID + " is available"})
			return true, nil
		case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
			reason := ""
			if im.StateReason != nil {
				reason = ": " + aws.ToString(im.StateReason.Message)
			}
			return false, fmt.Errorf("image %s is %s%s", s.ImageID, im.State, reason)
		}
		pct := -1
		if len(s.SnapshotIDs) > 0 {
			so, err := s.opts.EC2.DescribeSnapshots(wctx, &ec2.DescribeSnapshotsInput{SnapshotIds: s.SnapshotIDs})
			if err == nil && len(so.Snapshots) > 0 {
				sum := 0
				for _, sn := range so.Snapshots {
					p, _ := strconv.Atoi(strings.TrimSuffix(aws.ToString(sn.Progress), "%"))
					sum += p
				}
				pct = sum / len(so.Snapshots)
			}
		}
		if pct != last {
			last = pct
			s.emit(Event{Type: EventProgress, Step: StepWaitImage, Percent: pct, Message: fmt.Sprintf("image %s is %s", s.ImageID, im.State)})
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// Still pending, not failed: AWS may finish it yet. Keep it, and
		// let --resume wait for it later.
		s.ImagePending = true
		return fmt.Errorf("%w: %s still pending after %s (kept; later: latentworker bake --resume %s): %w", ErrImagePending, s.ImageID, s.opts.Timeouts.Image, s.RunID, err)
	}
	return err
}

// waitResumedImage is waitImage for a resumed run: an image the resume
// found unverified is at stake from here on (rolled back if it fails).
func waitResumedImage(ctx context.Context, s *State) error {
	if s.resumedImage {
		s.resumedImage = false
		s.pushImageUndo(s.ImageID)
	}
	return waitImage(ctx, s)
}

// verifyImage boots a throwaway instance from the image and checks that its
// worker starts on its own. Once it has (or NoVerify accepted the image
// unbooted), the image is safe: its undo is marked kept, so a later
// failure keeps it for --resume instead of removing it, and it is tagged
// fleet.TagVerified so that a resume need not boot it again.
func verifyImage(ctx context.Context, s *State) error {
	switch {
	case s.ImageVerified:
		s.emit(Event{Type: EventProgress, Step: StepVerifyImage, Percent: -1, Message: "image " + s.ImageID + " was verified by an earlier attempt of the run"})
		return nil
	case s.opts.NoVerify:
		s.warn(StepVerifyImage, "skipped (--no-verify): the new image was not booted")
		s.imageSafe()
		return nil
	}
	if err := s.bootImage(ctx); err != nil {
		return err
	}
	s.verifiedBoot = true
	s.imageSafe()
	if _, err := s.opts.EC2.CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{s.ImageID},
		Tags:      []types.Tag{{Key: aws.String(fleet.TagVerified), Value: aws.String(s.now().UTC().Format(time.RFC3339))}},
	}); err != nil {
		// Only a resume would miss it (it boots the image again).
		s.warn(StepVerifyImage, fmt.Sprintf("could not tag image %s %s: %v", s.ImageID, fleet.TagVerified, err))
	}
	return nil
}

// imageSafe makes the image one that no undo removes.
func (s *State) imageSafe() {
	s.ImageVerified = true
	s.undo.keepID(s.ImageID)
}

// bootImage launches a throwaway instance from the image, checks that its
// worker comes up on its own and terminates it.
func (s *State) bootImage(ctx context.Context) error {
	id, it, err := s.runInstance(ctx, s.ImageID, fleet.RoleVerify, KindTemp)
	if err != nil {
		return err
	}
	addr, err := s.waitInstance(ctx, id)
	if err != nil {
		return err
	}
	c, t, err := s.dialInstance(ctx, StepVerifyImage, id, addr)
	if err != nil {
		return err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	if s.Worker.Name == "" {
		// A resumed run never provisioned: what the worker must look like
		// comes from the configuration and the image's own OS.
		name, err := s.driver(StepVerifyImage).OSName(ctx, c)
		if err != nil {
			return fmt.Errorf("instance %s: %w", id, err)
		}
		s.OSName, s.Worker = name, s.opts.Config.ScriptWorker(name)
	}
	redial := func(ctx context.Context) (*provision.Client, error) {
		nc, err := provision.Dial(ctx, t)
		return s.timed(nc), err
	}
	if err := s.verifyUp(ctx, StepVerifyImage, &c, redial, id); err != nil {
		return fmt.Errorf("instance booted from %s: %w", s.ImageID, err)
	}
	_ = c.Close()
	c = nil
	if err := s.undo.runNow(ctx, it); err != nil {
		return fmt.Errorf("terminating verification instance %s: %w", id, err)
	}
	return nil
}

// release makes the image, and its copies in aws.copy_to_regions, the
// worker's to run: instances launched from them require IMDSv2
// (EC2LatentWorker passes no metadata options, so the image must say it;
// AWS cannot undo this), and the ready tag says the bake completed. A
// master that finds the worker's newest AMI by itself may launch only
// images with that tag, so it never picks one still being made, verified
// or copied.
func release(ctx context.Context, s *State) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if err := s.releaseIn(ctx, s.opts.EC2, s.Region, s.ImageID); err != nil {
		return err
	}
	for _, c := range s.Copies {
		if err := s.releaseIn(ctx, s.opts.RegionEC2(c.Region), c.Region, c.ImageID); err != nil {
			return err
		}
	}
	return nil
}

func (s *State) releaseIn(ctx context.Context, api EC2API, region, id string) error {
	if _, err := api.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
		ImageId: aws.String(id), ImdsSupport: &types.AttributeValue{Value: aws.String(string(types.ImdsSupportValuesV20))},
	}); err != nil {
		return fmt.Errorf("requiring IMDSv2 on image %s in %s (imds-support v2.0): %w", id, region, err)
	}
	if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{id},
		Tags:      []types.Tag{{Key: aws.String(fleet.TagReady), Value: aws.String(s.now().UTC().Format(time.RFC3339))}},
	}); err != nil {
		return fmt.Errorf("tagging image %s in %s %s: %w", id, region, fleet.TagReady, err)
	}
	return nil
}
