package bake_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
)

// BenchmarkBake bakes in the lab b.N times (run it with -benchtime 1x or
// 3x: `make bench-bake`) and reports the wall time and how it splits:
// remote commands (apt, the worker setup, ...), waits for EC2 (the lab's
// boots, reboots, stop, image capture) and the tool's own overhead (the
// rest: API calls, SSH handshakes, polling granularity, cleanup).
func BenchmarkBake(b *testing.B) {
	e := setup(b)
	var wall, remote, wait time.Duration
	steps := map[string]time.Duration{}
	var order []string
	for i := 0; i < b.N; i++ {
		opts := e.options(b, nil)
		opts.Events = nil
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
		for _, t := range m.Timings {
			if _, ok := steps[t.Step]; !ok {
				order = append(order, t.Step)
			}
			steps[t.Step] += t.Elapsed
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
	fmt.Fprintf(os.Stderr, "  remote commands  %8.2fs\n", (remote / n).Seconds())
	fmt.Fprintf(os.Stderr, "  waits for EC2    %8.2fs  (the lab's boots, reboots, stop, image capture)\n", (wait / n).Seconds())
	fmt.Fprintf(os.Stderr, "  tool overhead    %8.2fs  (%.1f%% of wall time)\n", (overhead / n).Seconds(), 100*overhead.Seconds()/wall.Seconds())
	fmt.Fprintf(os.Stderr, "  per step:\n")
	for _, s := range order {
		fmt.Fprintf(os.Stderr, "    %-15s %8.2fs\n", s, (steps[s] / n).Seconds())
	}
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
		var one time.Duration
		for i := range n {
			res, err := bake.Run(context.Background(), optsFor(i))
			if err != nil {
				b.Fatalf("bake %d of %d, one after another: %v", i+1, n, err)
			}
			one += res.Manifest.WallTime
		}
		sequential := time.Since(start)
		start = time.Now()
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
		mean := one / time.Duration(n)
		b.ReportMetric(sequential.Seconds(), "sequential-s")
		b.ReportMetric(concurrent.Seconds(), "concurrent-s")
		fmt.Fprintf(os.Stderr, "\n%d bakes in the lab (verification off):\n", n)
		fmt.Fprintf(os.Stderr, "  one after another  %8.1fs (one bake %.1fs on average)\n", sequential.Seconds(), mean.Seconds())
		fmt.Fprintf(os.Stderr, "  all at once        %8.1fs\n", concurrent.Seconds())
		fmt.Fprintf(os.Stderr, "  sequential / concurrent  %.2f\n", sequential.Seconds()/concurrent.Seconds())
		fmt.Fprintf(os.Stderr, "  concurrent / one bake    %.2f\n", concurrent.Seconds()/mean.Seconds())
	}
}
