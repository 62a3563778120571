package bake

// When the waits poll: one schedule per transition and environment.

import (
	"context"
	"time"

	"github.com/latentworker/latentworker/provision"
)

// Transition is a change of state a run waits for.
type Transition string

// The transitions a run waits for.
const (
	TransRunning    Transition = "running"     // an instance launched reaches running
	TransHostKeys   Transition = "host-keys"   // an instance's host keys on its console
	TransSSH        Transition = "ssh-up"      // SSH answers on a running instance
	TransReboot     Transition = "reboot-back" // a rebooted builder answers SSH with a new boot ID
	TransStopped    Transition = "stopped"     // the builder stopped
	TransImage      Transition = "image"       // the new image is available
	TransCopy       Transition = "copy"        // a copy of it in another region is available
	TransServiceUp  Transition = "service-up"  // the worker service came up on its own
	TransTerminated Transition = "terminated"  // an instance is gone
)

// Schedule is when a wait asks whether its transition happened: by what the
// transition is expected to take, slowly before that, as often as allowed
// around it, and always within two bounds:
//
//   - the gap between two calls is at most Period, so a change is noticed
//     at most Period (and one answer's latency) after it happened;
//   - the k-th call (k from 1) is made no earlier than (k-1)·Period after
//     the wait began, so a wait never makes more calls than a fixed poll
//     every Period (with its first call at once) would have made by then.
//
// A fixed poll's first call, at once, learns nothing (a transition just
// asked for has not happened yet); the schedule spends that one Period of
// slack on extra calls where the transition is expected to end. The total
// time a wait takes is bounded by its timeout (a context), never by a
// number of calls.
type Schedule struct {
	// Expected is how long the transition usually takes, from the start of
	// the wait.
	Expected time.Duration
	// Period is the longest gap between two calls and the fixed poll the
	// schedule never calls more often than: 15 s on AWS, 1 s in the lab.
	Period time.Duration
	// Min is the shortest gap between two calls.
	Min time.Duration
}

// Next returns when to make call n+1, as an offset from the start of the
// wait, after n calls, the last of which started at last (ignored when n
// is 0: the wait began at 0).
func (s Schedule) Next(n int, last time.Duration) time.Duration {
	if n == 0 {
		last = 0
	}
	latest := last + s.Period
	if latest < s.Expected {
		return latest // slowly before the expected end: keep the slack
	}
	gap := s.Min
	if n == 0 {
		gap = 0
	}
	earliest := max(time.Duration(n)*s.Period, last+gap)
	return min(max(earliest, s.Expected), latest)
}

// The lab's poll: a call costs the lab a few milliseconds, and every
// period adds half of itself, on average, to each wait: a change is noticed
// within a quarter of a second there.
const (
	labPoll    = 250 * time.Millisecond
	labMinPoll = 100 * time.Millisecond
)

// Waits: how long each transition is expected to take, in the lab (its
// containers boot in about two seconds) and on AWS (from EC2's documented
// and commonly measured times). Only the noticing delay depends on them,
// never whether a wait succeeds.
var (
	labExpected = map[Transition]time.Duration{
		TransRunning:    2 * time.Second,
		TransHostKeys:   0,
		TransSSH:        0,
		TransReboot:     2500 * time.Millisecond,
		TransStopped:    500 * time.Millisecond,
		TransImage:      5 * time.Second,
		TransCopy:       5 * time.Second,
		TransServiceUp:  0,
		TransTerminated: 500 * time.Millisecond,
	}
	awsExpected = map[Transition]time.Duration{
		TransRunning:    15 * time.Second,
		TransHostKeys:   30 * time.Second,
		TransSSH:        0,
		TransReboot:     45 * time.Second,
		TransStopped:    45 * time.Second,
		TransImage:      5 * time.Minute,
		TransCopy:       10 * time.Minute, // a cross-region copy starts once the image's snapshots are complete
		TransServiceUp:  5 * time.Second,
		TransTerminated: 45 * time.Second,
	}
)

// schedule returns the run's schedule for transition t: Timeouts.Poll is
// the period (1 s in the lab, 15 s on AWS), MinPoll the shortest gap.
func (s *State) schedule(t Transition) Schedule {
	expected := awsExpected
	if loopback(s.opts.Endpoint) {
		expected = labExpected
	}
	return Schedule{Expected: expected[t], Period: s.opts.Timeouts.Poll, Min: s.opts.Timeouts.MinPoll}
}

// dialBackoff is the backoff of SSH connection attempts (provision.Dial):
// from MinPoll up to the period, so that SSH coming up is noticed within a
// period too (a connection attempt is not a call to AWS).
//
// In the lab a refused connection costs nothing: it is tried every MinPoll.
func (s *State) dialBackoff(t *provision.Target) {
	t.MinBackoff = s.opts.Timeouts.MinPoll
	t.MaxBackoff = min(s.opts.Timeouts.Poll, provision.DefaultMaxBackoff)
	if loopback(s.opts.Endpoint) {
		t.MaxBackoff = t.MinBackoff
	}
}

// record adds a wait that did not poll through pollOn.
func (s *State) record(t Transition, resource string, began time.Time, calls int) {
	s.Waits = append(s.Waits, Wait{Transition: t, Resource: resource, Began: began, Noticed: time.Now(), Calls: calls})
}

// Wait is one wait of a run: when it began, when the transition was seen
// (the answer that showed it came back) and how many calls it took.
type Wait struct {
	Transition Transition `json:"transition"`
	Resource   string     `json:"resource"`
	Began      time.Time  `json:"began"`
	Noticed    time.Time  `json:"noticed"`
	Calls      int        `json:"calls"`
}

// pollSchedule calls f on sched until it reports done, fails or ctx ends,
// and records the wait in the run (Waits). f's error ends the wait.
func (s *State) pollSchedule(ctx context.Context, t Transition, resource string, f func() (bool, error)) error {
	return s.pollOn(ctx, s.schedule(t), t, resource, f)
}

// pollOn is pollSchedule on sched.
func (s *State) pollOn(ctx context.Context, sched Schedule, t Transition, resource string, f func() (bool, error)) error {
	w := Wait{Transition: t, Resource: resource, Began: time.Now()}
	err := waitOn(ctx, sched, w.Began, func() (bool, error) {
		w.Calls++
		return f()
	})
	if err == nil {
		w.Noticed = time.Now()
		s.Waits = append(s.Waits, w)
	}
	return err
}

// waitOn calls f at the times sched gives, counted from began, until f
// reports done or fails, or ctx ends (its cause is returned then).
func waitOn(ctx context.Context, sched Schedule, began time.Time, f func() (bool, error)) error {
	var last time.Duration
	for n := 0; ; n++ {
		at := began.Add(sched.Next(n, last))
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			case <-t.C:
			}
		} else if err := context.Cause(ctx); err != nil {
			return err
		}
		last = time.Since(began)
		done, err := f()
		if err != nil || done {
			return err
		}
	}
}
