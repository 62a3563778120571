package bake

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// calls simulates sched against a transition at d (answers taking no
// time) and returns the number of calls until one sees it and that call's
// time.
func calls(sched Schedule, d time.Duration) (int, time.Duration) {
	var last time.Duration
	for n := 0; ; n++ {
		at := sched.Next(n, last)
		if at < last {
			panic("schedule goes back in time")
		}
		last = at
		if at >= d {
			return n + 1, at
		}
	}
}

// fixedCalls is how many calls a fixed poll every period, its first call
// at once, makes until it sees a transition at d.
func fixedCalls(period, d time.Duration) int {
	return int((d+period-1)/period) + 1
}

// envSchedules are every wait's schedule in the lab and on AWS, with the
// run's default periods.
func envSchedules(t *testing.T) map[string]Schedule {
	out := map[string]Schedule{}
	for _, env := range []struct {
		name, endpoint string
		expected       map[Transition]time.Duration
		maxDelay       time.Duration
	}{
		{"lab", "http://127.0.0.1:4566", labExpected, time.Second},
		{"aws", "", awsExpected, 15 * time.Second},
	} {
		opts := Options{Endpoint: env.endpoint}
		if loopback(env.endpoint) {
			opts.Timeouts.Poll, opts.Timeouts.MinPoll = labPoll, labMinPoll
		}
		opts.Timeouts = opts.Timeouts.withDefaults()
		s := &State{opts: opts}
		for tr := range env.expected {
			sched := s.schedule(tr)
			if sched.Period > env.maxDelay {
				t.Errorf("%s %s: period %s; want at most %s", env.name, tr, sched.Period, env.maxDelay)
			}
			out[env.name+" "+string(tr)] = sched
		}
	}
	return out
}

// TestScheduleBounds: for a transition at any time, every wait notices it
// at most one period after it happened (1 s in the lab, 15 s on AWS) and
// has made no more calls by then than a fixed poll every period (AWS: a
// fixed 15 s poll) would have.
func TestScheduleBounds(t *testing.T) {
	for name, sched := range envSchedules(t) {
		step := sched.Period / 50
		for d := time.Duration(0); d <= 3*sched.Expected+10*sched.Period; d += step {
			n, at := calls(sched, d)
			if delay := at - d; delay > sched.Period {
				t.Errorf("%s: transition at %s noticed at %s, %s late; want at most %s", name, d, at, delay, sched.Period)
			}
			if fixed := fixedCalls(sched.Period, d); n > fixed {
				t.Errorf("%s: transition at %s took %d calls; a fixed %s poll takes %d", name, d, n, sched.Period, fixed)
			}
		}
	}
}

// TestScheduleFastNearExpected: a transition that ends when it is expected
// to is noticed at once, and the schedule waits a whole period between
// calls well before that.
func TestScheduleFastNearExpected(t *testing.T) {
	for name, sched := range envSchedules(t) {
		if _, at := calls(sched, sched.Expected); at != sched.Expected {
			t.Errorf("%s: transition at its expected %s noticed at %s; want at once", name, sched.Expected, at)
		}
		if sched.Expected < 3*sched.Period {
			continue
		}
		if at := sched.Next(0, 0); at != sched.Period {
			t.Errorf("%s: first call at %s; want one period (%s) in, long before the expected %s", name, at, sched.Period, sched.Expected)
		}
	}
}

// TestScheduleTable spells out two schedules.
func TestScheduleTable(t *testing.T) {
	for _, tc := range []struct {
		sched Schedule
		want  []time.Duration
	}{
		{Schedule{Expected: 1500 * time.Millisecond, Period: time.Second, Min: 250 * time.Millisecond},
			[]time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second}},
		{Schedule{Expected: 40 * time.Second, Period: 15 * time.Second, Min: 2 * time.Second},
			[]time.Duration{15 * time.Second, 30 * time.Second, 40 * time.Second, 45 * time.Second, 60 * time.Second}},
		{Schedule{Expected: 0, Period: time.Second, Min: 250 * time.Millisecond},
			[]time.Duration{0, time.Second, 2 * time.Second}},
	} {
		var got []time.Duration
		var last time.Duration
		for n := range tc.want {
			last = tc.sched.Next(n, last)
			got = append(got, last)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%+v: %v; want %v", tc.sched, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%+v: calls at %v; want %v", tc.sched, got, tc.want)
				break
			}
		}
	}
}

// TestWaitOnTimeout: a wait ends with its context (the total timeout),
// never after a number of calls, and calls on the schedule meanwhile.
func TestWaitOnTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sched := Schedule{Expected: 40 * time.Second, Period: 15 * time.Second, Min: 2 * time.Second}
		const timeout = 10*time.Minute + time.Second
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		began := time.Now()
		var at []time.Duration
		err := waitOn(ctx, sched, began, func() (bool, error) {
			at = append(at, time.Since(began))
			return false, nil
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waitOn = %v; want the deadline", err)
		}
		// A fixed 15 s poll calls at 0, 15 s, ..., 600 s.
		if fixed := int(timeout/(15*time.Second)) + 1; len(at) > fixed || len(at) < fixed-1 {
			t.Errorf("%d calls in %s; want at most a fixed 15 s poll's %d, and no fewer than one less", len(at), timeout, fixed)
		}
		for i, a := range at {
			if i > 0 && a-at[i-1] > sched.Period {
				t.Errorf("calls %d and %d %s apart; want at most %s", i, i+1, a-at[i-1], sched.Period)
			}
		}
	})
}
