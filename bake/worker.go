package bake

// The worker on the builder: provisioning, updates and reboots, verification
// and generalization, through the platform's driver.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
)

// driver returns the platform's driver, reporting script output as progress.
func (s *State) driver(step string) *provision.Driver {
	return &provision.Driver{Platform: s.Platform, RebootPoll: s.opts.Timeouts.MinPoll, Progress: lineWriter(func(line string) {
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: line})
	})}
}

// builderDriver is driver for the builder's own steps: a script whose
// connection drops is followed again on a new connection to the builder,
// which becomes the run's client.
func (s *State) builderDriver(step string) *provision.Driver {
	d := s.driver(step)
	d.Reconnect = func(ctx context.Context, old *provision.Client) (*provision.Client, error) {
		_ = old.Close()
		c, err := s.redial(ctx)
		if err != nil {
			return nil, err
		}
		s.client = c
		return c, nil
	}
	return d
}

type lineWriter func(string)

func (f lineWriter) Write(p []byte) (int, error) {
	f(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = lineWriter(nil)

func provisionWorker(ctx context.Context, s *State) error {
	d := s.builderDriver(StepProvision)
	name, err := d.OSName(ctx, s.client)
	if err != nil {
		return fmt.Errorf("instance %s: %w", s.InstanceID, err)
	}
	s.OSName = name
	s.Worker = s.opts.Config.ScriptWorker(s.OSName)
	// The packages first: a name the release lacks fails the bake within
	// a minute of the connection, before the worker is set up.
	img := s.opts.Config.Image
	if err := d.BuildDeps(ctx, s.client, img.CPythonBuildDeps, img.ExtraPackages); err != nil {
		return fmt.Errorf("installing CPython build dependencies and packages on instance %s: %w", s.InstanceID, err)
	}
	if err := d.Setup(ctx, s.client, s.Worker, s.opts.Password.Reveal()); err != nil {
		return fmt.Errorf("setting up worker %s on instance %s: %w", s.Worker.Name, s.InstanceID, err)
	}
	for _, path := range s.opts.Config.Image.ExtraScripts {
		content, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("extra script: %w", err)
		}
		if err := d.RunScript(ctx, s.client, filepath.Base(path), content); err != nil {
			return fmt.Errorf("extra script %s on instance %s: %w", path, s.InstanceID, err)
		}
	}
	return nil
}

func verifyConfig(ctx context.Context, s *State) error {
	if _, err := s.builderDriver(StepVerifyConfig).Verify(ctx, s.client, s.Worker, s.opts.Password.Reveal()); err != nil {
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, s.InstanceID, err)
	}
	return nil
}

func updatesReboot(ctx context.Context, s *State) error {
	d := s.builderDriver(StepUpdates)
	if err := d.Updates(ctx, s.client); err != nil {
		return fmt.Errorf("applying updates on instance %s: %w", s.InstanceID, err)
	}
	max := s.opts.MaxReboots
	for n := 1; ; n++ {
		s.emit(Event{Type: EventProgress, Step: StepUpdates, Percent: -1, Message: fmt.Sprintf("reboot %d of instance %s", n, s.InstanceID)})
		done := s.waiting()
		began := time.Now()
		c, err := d.Reboot(ctx, s.client, s.redial)
		done()
		if err == nil {
			s.record(TransReboot, s.InstanceID, began, 1)
		}
		s.client = c
		if err != nil {
			return fmt.Errorf("rebooting instance %s: %w", s.InstanceID, err)
		}
		pending, err := d.RebootRequired(ctx, s.client)
		if err != nil {
			return fmt.Errorf("checking for a pending reboot on instance %s: %w", s.InstanceID, err)
		}
		if !pending {
			return nil
		}
		if n >= max {
			return fmt.Errorf("instance %s still asks for a reboot after %d reboots", s.InstanceID, n)
		}
	}
}

// verifyUp waits, bounded by Timeouts.Verify, until the worker's service
// has come up on its own on the machine *c is connected to
// (scripts.Facts.ServiceUp: active, or refused by the master after it
// connected), then checks the worker's whole configuration there. A
// connection that drops meanwhile (a young boot) is made again with redial,
// and *c is then the new client (nil if the last attempt failed).
func (s *State) verifyUp(ctx context.Context, step string, c **provision.Client, redial func(context.Context) (*provision.Client, error), id string) error {
	unit := s.Platform.Unit(s.opts.Config.Worker.Name)
	d := s.driver(step)
	vctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Verify)
	defer cancel()
	var checkErr, lastErr error
	why := ""
	// Each poll is a command on the instance, not a call to AWS: at least
	// every 2 s.
	sched := s.schedule(TransServiceUp)
	sched.Period = min(sched.Period, 2*time.Second)
	sched.Min = min(sched.Min, sched.Period)
	err := s.pollOn(vctx, sched, TransServiceUp, id, func() (bool, error) {
		if *c == nil {
			nc, err := redial(vctx)
			if err != nil {
				lastErr = err
				return false, nil
			}
			*c = nc
		}
		facts, err := d.Verify(vctx, *c, s.Worker, s.opts.Password.Reveal())
		var mismatch *scripts.MismatchError
		var exit *provision.ExitError
		switch {
		case err == nil || errors.As(err, &mismatch):
			var up bool
			up, why = facts.ServiceUp()
			checkErr, lastErr = err, nil
			return up, nil
		case errors.As(err, &exit):
			return false, err // the script itself failed: no use waiting
		default:
			// The connection is gone.
			lastErr = err
			_ = (*c).Close()
			*c = nil
			return false, nil
		}
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return err
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, id, err)
	case err != nil && why == "":
		return fmt.Errorf("%w: %s on instance %s: no answer after %s: %w", ErrWorkerService, unit, id, s.opts.Timeouts.Verify, lastErr)
	case err != nil:
		return fmt.Errorf("%w: %s on instance %s is %s after %s", ErrWorkerService, unit, id, why, s.opts.Timeouts.Verify)
	}
	if why == scripts.RefusedByMaster {
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: fmt.Sprintf("worker %s on instance %s %s", s.Worker.Name, id, why)})
	}
	if checkErr != nil {
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, id, checkErr)
	}
	return nil
}

func verifyService(ctx context.Context, s *State) error {
	return s.verifyUp(ctx, StepVerifyService, &s.client, s.redial, s.InstanceID)
}

func generalize(ctx context.Context, s *State) error {
	if err := s.builderDriver(StepGeneralize).Generalize(ctx, s.client, s.PublicKey); err != nil {
		return fmt.Errorf("generalizing instance %s: %w", s.InstanceID, err)
	}
	s.closeClient()
	return nil
}
