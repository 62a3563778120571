package bake_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/lab"
)

// BenchmarkBake bakes in the lab b.N times (run it with -benchtime 1x or
// 3x: `make bench-bake`) and reports the wall time and how it splits:
//
//   - remote commands: the time of every command (and upload) on the
//     instances, from the call to its exit status, SSH session set-up
//     included (apt, the worker setup, the job follower's last poll ...);
//   - waits for EC2: from asking for a transition (launch, reboot, stop,
//     image, terminate) to noticing it, less any remote command in between
//     (the lab's boots, reboots, stop, image capture, and the noticing
//     delay, printed separately below);
//   - the tool's own time: the rest (API calls, key generation, SSH
//     handshakes, cleanup, Go).
//
// Each wait's noticing delay is the time from the lab's record of the
// change (lab.State.Transitions) to bake's answer that saw it (or from the
// start of the wait, when the change came before it).
func BenchmarkBake(b *testing.B) {
	e := setup(b)
	var wall, remote, wait, noticing time.Duration
	var commands int
	steps := map[string]time.Duration{}
	var order []string
	delays := map[bake.Transition][]time.Duration{}
	calls := map[bake.Transition]int{}
	var torder []bake.Transition
	phases := &phaseClock{total: map[string]time.Duration{}}
	for i := 0; i < b.N; i++ {
		opts := e.options(b, nil)
		opts.Events = phases
		opts.TerminateBuilder = true
		opts.Password = config.NewSecret(e.password)
		res, err := bake.Run(context.Background(), opts)
		if err != nil {
			b.Fatalf("bake: %v", err)
		}
		m := res.Manifest
		wall += m.WallTime
		remote += m.RemoteTime
		wait += m.WaitTime
		commands += m.RemoteCommands
		for _, t := range m.Timings {
			if _, ok := steps[t.Step]; !ok {
				order = append(order, t.Step)
			}
			steps[t.Step] += t.Elapsed
		}
		trs, err := lab.ReadTransitions(e.lab.State.Transitions)
		if err != nil {
			b.Fatalf("lab transitions: %v", err)
		}
		for _, w := range m.Waits {
			d, ok := noticingDelay(w, trs)
			if !ok {
				continue
			}
			if _, ok := delays[w.Transition]; !ok {
				torder = append(torder, w.Transition)
			}
			delays[w.Transition] = append(delays[w.Transition], d)
			noticing += d
			calls[w.Transition] += w.Calls
		}
	}
	n := time.Duration(b.N)
	overhead := wall - remote - wait
	b.ReportMetric((wall / n).Seconds(), "wall-s/bake")
	b.ReportMetric((remote / n).Seconds(), "remote-s/bake")
	b.ReportMetric((wait / n).Seconds(), "ec2wait-s/bake")
	b.ReportMetric((overhead / n).Seconds(), "overhead-s/bake")
	fmt.Fprintf(os.Stderr, "\nbake in the lab, mean of %d run(s):\n", b.N)
	fmt.Fprintf(os.Stderr, "  wall time        %8.2fs\n", (wall / n).Seconds())
	fmt.Fprintf(os.Stderr, "  remote commands  %8.2fs  (%d commands and uploads, SSH session set-up included)\n", (remote / n).Seconds(), commands/b.N)
	fmt.Fprintf(os.Stderr, "  waits for EC2    %8.2fs  (the lab's boots, reboots, stop, image capture, and the noticing delays below)\n", (wait / n).Seconds())
	fmt.Fprintf(os.Stderr, "  tool overhead    %8.2fs  (%.1f%% of wall time: the rest)\n", (overhead / n).Seconds(), 100*overhead.Seconds()/wall.Seconds())
	fmt.Fprintf(os.Stderr, "  tool's own time  %8.2fs  (the overhead plus the noticing delays, %.2fs, which the waits above include)\n", ((overhead + noticing) / n).Seconds(), (noticing / n).Seconds())
	fmt.Fprintf(os.Stderr, "  per step:\n")
	for _, s := range order {
		fmt.Fprintf(os.Stderr, "    %-15s %8.2fs\n", s, (steps[s] / n).Seconds())
	}
	fmt.Fprintf(os.Stderr, "  script phases over 0.2s (from a script's progress line to its next, or its step's end):\n")
	for _, p := range phases.order {
		if d := phases.total[p] / n; d >= 200*time.Millisecond {
			fmt.Fprintf(os.Stderr, "    %-60.60s %6.2fs\n", p, d.Seconds())
		}
	}
	fmt.Fprintf(os.Stderr, "  noticing delay per wait (from the lab's record of the change to bake's answer):\n")
	for _, t := range torder {
		var sum, worst time.Duration
		for _, d := range delays[t] {
			sum += d
			worst = max(worst, d)
		}
		k := len(delays[t])
		fmt.Fprintf(os.Stderr, "    %-15s mean %6.3fs  max %6.3fs  (%d waits, %.1f calls each)\n", t, (sum / time.Duration(k)).Seconds(), worst.Seconds(), k, float64(calls[t])/float64(k))
	}
}

// phaseClock times the phases of the scripts: each of their progress lines
// ("latentworker: ...") starts a phase that ends at the next line or at
// the end of the step.
type phaseClock struct {
	cur   string
	since time.Time
	total map[string]time.Duration
	order []string
}

func (p *phaseClock) Event(e bake.Event) {
	now := time.Now()
	end := func() {
		if p.cur != "" {
			if _, ok := p.total[p.cur]; !ok {
				p.order = append(p.order, p.cur)
			}
			p.total[p.cur] += now.Sub(p.since)
			p.cur = ""
		}
	}
	switch {
	case e.Type == bake.EventStepFinished:
		end()
	case e.Type == bake.EventProgress && strings.HasPrefix(e.Message, "latentworker: "):
		end()
		p.cur, p.since = e.Step+": "+strings.TrimPrefix(e.Message, "latentworker: "), now
	}
}

// labEvent is the lab's record (lab.Transition.Event) of each transition.
var labEvent = map[bake.Transition]string{
	bake.TransRunning: "running", bake.TransHostKeys: "ssh-up", bake.TransSSH: "ssh-up",
	bake.TransReboot: "ssh-up", bake.TransStopped: "stopped", bake.TransImage: "available", bake.TransCopy: "available",
	bake.TransTerminated: "terminated",
}

// noticingDelay is how long after the lab's change wait w noticed it: from
// the change's last record before w ended (or w's start, if later) to w's
// end. The worker service coming up has no record in the lab.
func noticingDelay(w bake.Wait, trs []lab.Transition) (time.Duration, bool) {
	ev, ok := labEvent[w.Transition]
	if !ok {
		return 0, false
	}
	var at time.Time
	for _, tr := range trs {
		if tr.Resource == w.Resource && tr.Event == ev && !tr.At.After(w.Noticed) && tr.At.After(at) {
			at = tr.At
		}
	}
	if at.IsZero() {
		return 0, false
	}
	if at.Before(w.Began) {
		at = w.Began
	}
	return w.Noticed.Sub(at), true
}

// BenchmarkMatrix bakes N workers (MATRIX_N, default 4) in one lab, first
// one after another, then all at once, as `latentworker bake --fleet`
// does, and prints both wall times and their ratios (`make bench-matrix`).
// Verification is off: the throwaway boot is the same work in both.
func BenchmarkMatrix(b *testing.B) {
	n := 4
	if v := os.Getenv("MATRIX_N"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			b.Fatalf("MATRIX_N=%q: want a positive number", v)
		}
	}
	e := setup(b)
	optsFor := func(i int) bake.Options {
		cfg := *e.cfg
		cfg.Worker.Name = fmt.Sprintf("matrix-%d", i)
		opts := e.options(b, nil)
		opts.Config = &cfg
		opts.Events = nil
		opts.TerminateBuilder = true
		opts.NoVerify = true
		return opts
	}
	for range b.N {
		start := time.Now()
		busy0 := busyCPU(b)
		var one time.Duration
		for i := range n {
			res, err := bake.Run(context.Background(), optsFor(i))
			if err != nil {
				b.Fatalf("bake %d of %d, one after another: %v", i+1, n, err)
			}
			one += res.Manifest.WallTime
		}
		sequential := time.Since(start)
		cpu := (busyCPU(b) - busy0) / time.Duration(n)
		start = time.Now()
		busy0 = busyCPU(b)
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, err := bake.Run(context.Background(), optsFor(i))
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				b.Fatalf("bake at once: %v", err)
			}
		}
		concurrent := time.Since(start)
		cpuAtOnce := (busyCPU(b) - busy0) / time.Duration(n)
		mean := one / time.Duration(n)
		b.ReportMetric(sequential.Seconds(), "sequential-s")
		b.ReportMetric(concurrent.Seconds(), "concurrent-s")
		fmt.Fprintf(os.Stderr, "\n%d bakes in the lab (verification off):\n", n)
		fmt.Fprintf(os.Stderr, "  one after another  %8.1fs (one bake %.1fs on average)\n", sequential.Seconds(), mean.Seconds())
		fmt.Fprintf(os.Stderr, "  all at once        %8.1fs\n", concurrent.Seconds())
		fmt.Fprintf(os.Stderr, "  sequential / concurrent  %.2f\n", sequential.Seconds()/concurrent.Seconds())
		fmt.Fprintf(os.Stderr, "  concurrent / one bake    %.2f\n", concurrent.Seconds()/mean.Seconds())
		// The machine's processors bound the concurrent run: N bakes need N
		// times one bake's processor time (the lab's instances, their
		// package installs, the lab and the tool), and this machine has
		// only so many processors to give it.
		cores := runtime.NumCPU()
		floor := max(time.Duration(n)*cpu/time.Duration(cores), mean)
		fmt.Fprintf(os.Stderr, "  processor time per bake  %.1fs one after another, %.1fs all at once, of %d processors (everything on this machine, the instances' installs included)\n", cpu.Seconds(), cpuAtOnce.Seconds(), cores)
		fmt.Fprintf(os.Stderr, "  so all at once takes at least %.1fs here: concurrent / one bake >= %.2f, sequential / concurrent <= %.2f\n",
			floor.Seconds(), floor.Seconds()/mean.Seconds(), sequential.Seconds()/floor.Seconds())
		b.ReportMetric(cpu.Seconds(), "cpu-s/bake")
		b.ReportMetric(cpuAtOnce.Seconds(), "cpu-at-once-s/bake")
	}
}

// busyCPU is the processor time this machine has spent on anything but
// idling and waiting for I/O since it booted (/proc/stat's first line).
func busyCPU(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatalf("processor time: %v", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		b.Fatalf("processor time: /proc/stat starts %q", line)
	}
	// user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 {
			continue // idle, iowait, steal; guest time is in user already
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("processor time: /proc/stat: %v", err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux the lab runs on.
	return time.Duration(ticks) * 10 * time.Millisecond
}
