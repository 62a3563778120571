package bake

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/latentworker/latentworker/provision"
)

// Step is one stage of the pipeline.
type Step struct {
	Name string
	Run  func(context.Context, *State) error
}

// Step names, in pipeline order.
const (
	StepPreflight     = "preflight"
	StepTempKey       = "temp-key"
	StepSecurityGroup = "security-group"
	StepLaunch        = "launch"
	StepWaitRunning   = "wait-running"
	StepConnect       = "connect"
	StepProvision     = "provision"
	StepVerifyConfig  = "verify-config"
	StepUpdates       = "updates-reboot"
	StepVerifyService = "verify-service"
	StepGeneralize    = "generalize"
	StepStop          = "stop"
	StepCreateImage   = "create-image"
	StepWaitImage     = "wait-image"
	StepVerifyImage   = "verify-image"
	StepCopyImage     = "copy-image"
	StepRelease       = "release"
	StepManifest      = "manifest"
)

// ResumeSteps finishes a run whose image was kept when it failed
// (Options.Resume: still pending when its wait ran out, or verified before
// a later step failed): find that image, then the end of the pipeline with
// temporaries of its own. A run that had completed (its image released or
// handed off) ends after preflight, having changed nothing (State.Finished).
func ResumeSteps() []Step {
	return []Step{
		{StepPreflight, preflightResume},
		{StepTempKey, tempKey},
		{StepSecurityGroup, securityGroup},
		{StepWaitImage, waitResumedImage},
		{StepVerifyImage, verifyImage},
		{StepCopyImage, copyImages},
		{StepRelease, release},
		{StepManifest, writeManifest},
	}
}

// Errors of preflight.
var (
	ErrNoBaseImage   = errors.New("no base image")
	ErrUnfitInstance = errors.New("instance type does not fit")
	ErrNoSSHCIDR     = errors.New("aws.ssh_cidr is not set")
	ErrBadKMSKey     = errors.New("no usable KMS key")
	ErrPublicImage   = errors.New("the new image is public")
	ErrWorkerService = errors.New("worker service is not active")
	ErrImagePending  = errors.New("the image is not available yet")
	// ErrNothingToResume is a --resume of a run that has no image to
	// finish (none was made, it was rolled back, or the region or worker
	// is not the run's): bad input, found before anything is created.
	ErrNothingToResume = errors.New("nothing to resume")
)

// Minimums of the buildbot worker guide.
const (
	minVCPUs  = 2
	minMemMiB = 512
)

// Steps returns the pipeline, in order. This list is the product's order.
func Steps() []Step {
	return []Step{
		{StepPreflight, preflight},
		{StepTempKey, tempKey},
		{StepSecurityGroup, securityGroup},
		{StepLaunch, launch},
		{StepWaitRunning, waitRunning},
		{StepConnect, connect},
		{StepProvision, provisionWorker},
		{StepVerifyConfig, verifyConfig},
		{StepUpdates, updatesReboot},
		{StepVerifyService, verifyService},
		{StepGeneralize, generalize},
		{StepStop, stop},
		{StepCreateImage, createImage},
		{StepWaitImage, waitImage},
		{StepVerifyImage, verifyImage},
		{StepCopyImage, copyImages},
		{StepRelease, release},
		{StepManifest, writeManifest},
	}
}

func (s *State) emit(e Event) {
	if s.opts.Events != nil {
		e.Worker = s.opts.Config.Worker.Name
		s.opts.Events.Event(e)
	}
}

func (s *State) warn(step, msg string) { s.emit(Event{Type: EventWarning, Step: step, Message: msg}) }

func (s *State) cmd(format string, a ...any) string { return s.cmdIn(s.Region, format, a...) }

// cmdIn is the AWS CLI command that does format's EC2 call in region.
func (s *State) cmdIn(region, format string, a ...any) string {
	c := "aws ec2 " + fmt.Sprintf(format, a...)
	if region != "" {
		c += " --region " + region
	}
	return c
}

// poll calls f every interval until it reports done, f fails or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

func (s *State) now() time.Time { return s.opts.Now() }

// creating returns the context for a call that creates a resource: detached
// from cancellation and bounded, so that a Ctrl-C during the call still lets
// the ID come back and its undo be pushed (a cancelled request may have been
// carried out all the same). The step checks ctx again after pushing.
func (s *State) creating(ctx context.Context) context.Context {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeouts.Create)
	s.createCancels = append(s.createCancels, cancel)
	return c
}

// waiting starts counting time spent waiting for EC2; call the result to
// stop.
func (s *State) waiting() func() {
	start, remote := time.Now(), s.RemoteTime
	return func() { s.WaitTime += time.Since(start) - (s.RemoteTime - remote) }
}

// timed makes c report its commands' time to the run.
func (s *State) timed(c *provision.Client) *provision.Client {
	if c != nil {
		c.OnCommand = func(d time.Duration) { s.RemoteTime += d; s.RemoteCommands++ }
	}
	return c
}
