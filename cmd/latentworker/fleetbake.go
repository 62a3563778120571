package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
)

// runFleet bakes several workers at once, one configuration file each
// (--fleet): every configuration is checked, locally and against AWS
// (preflight), before anything is created;
// then each worker bakes with its own run ID, undo stack and manifest, and
// one failing stops or leaks none of the others. Progress lines carry the
// worker's name, --json events a "worker" field; the summary lists each
// result. It fails (exit 1, or 130 when interrupted) when any bake failed.
func runFleet(ctx context.Context, o *bakeOptions) error {
	if o.cf.flags.Changed("config") {
		return badInput{errors.New("--fleet: give the configuration files with --fleet only, not --config")}
	}
	for _, k := range config.Keys() {
		if k.Flag != "" && o.cf.flags.Changed(k.Flag) {
			return badInput{fmt.Errorf("--%s: not with --fleet (it would set %s for every worker; put it in each file)", k.Flag, k.Name)}
		}
	}
	if o.resume != "" || o.manifest != "" || o.debugKey != "" {
		return badInput{errors.New("--fleet: not with --resume, --manifest or --debug-key (each is one run's)")}
	}
	var jobs []*bakeJob
	var paths []string
	var errs []error
	names := map[string]string{}
	for _, path := range o.fleet {
		cfg, err := loadConfigFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("--fleet %s: %w", path, err))
			continue
		}
		if other, dup := names[cfg.Worker.Name]; dup {
			errs = append(errs, fmt.Errorf("--fleet %s: worker %s is baked by %s already", path, cfg.Worker.Name, other))
			continue
		}
		names[cfg.Worker.Name] = path
		job, err := prepareBake(ctx, o, cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("--fleet %s: %w", path, err))
			continue
		}
		jobs = append(jobs, job)
		paths = append(paths, path)
	}
	if err := errors.Join(errs...); err != nil {
		return badInput{err}
	}
	// Each file is also checked against AWS (preflight: credentials, base
	// image, instance type, subnet, KMS keys, copy regions), creating
	// nothing, before any bake starts: a file bad only on AWS stops the
	// whole fleet with nothing created.
	for i, j := range jobs {
		opts := bakeOptionsFor(j.cfg, j.password, j.awsCfg)
		opts.FromPrevious = o.fromPrevious
		if _, err := bake.Check(ctx, opts); err != nil {
			errs = append(errs, fmt.Errorf("--fleet %s: %w", paths[i], fieldError(err)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, errBadInput) {
			return badInput{fmt.Errorf("%w (nothing was baked: fix it, or leave the file out)", err)}
		}
		return fmt.Errorf("checking the fleet against AWS, nothing baked: %w", err)
	}

	type outcome struct {
		worker string
		out    string
		err    error
	}
	results := make([]outcome, len(jobs))
	var jp *jsonPrinter
	if o.json {
		jp = newJSONPrinter(o.stdout)
		o.jp = jp
	}
	var stderr io.Writer = &lockedWriter{w: o.stderr}
	// On a terminal, one live view with a block per worker; its printers
	// are all made before any run starts, since it ends when the last
	// closes.
	var live []printer
	if jp == nil && isLiveTerminal(o.stderr) {
		v := newLiveView(o.stderr, o.verbose)
		stderr = v
		for _, j := range jobs {
			name := j.cfg.Worker.Name
			live = append(live, v.printer(name, &prefixWriter{w: v, prefix: "[" + name + "] "}))
		}
	}
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			var p printer = jp
			var out bytes.Buffer
			jo := *o
			jo.stderr = &prefixWriter{w: stderr, prefix: "[" + j.cfg.Worker.Name + "] "}
			switch {
			case live != nil:
				defer live[i].close()
				p = live[i]
			case jp == nil:
				tp := newTextPrinter(jo.stderr, o.verbose)
				defer tp.close()
				p = tp
			}
			err := j.run(ctx, &jo, p, &out)
			results[i] = outcome{worker: j.cfg.Worker.Name, out: out.String(), err: err}
		})
	}
	wg.Wait()

	sort.SliceStable(results, func(a, b int) bool { return results[a].worker < results[b].worker })
	failed := 0
	var summary []map[string]any
	for _, r := range results {
		entry := map[string]any{"worker": r.worker, "ok": r.err == nil}
		if r.err != nil {
			failed++
			entry["error"] = r.err.Error()
			entry["exit_code"] = report(io.Discard, r.err)
		}
		summary = append(summary, entry)
		if jp != nil {
			continue
		}
		fmt.Fprintf(o.stdout, "worker: %s\n", r.worker)
		if r.err != nil {
			fmt.Fprintf(o.stdout, "error: %s\n", strings.ReplaceAll(r.err.Error(), "\n", " "))
		}
		fmt.Fprintf(o.stdout, "%s\n", r.out)
	}
	if jp != nil {
		jp.emit(map[string]any{"type": "summary", "workers": summary, "failed": failed, "succeeded": len(results) - failed})
	} else {
		fmt.Fprintf(o.stdout, "%d baked, %d failed\n", len(results)-failed, failed)
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if failed > 0 {
		// Each failure was reported with its worker; the summary ends the
		// stream, so no further error event.
		if jp != nil {
			jp.ended = true
		}
		return exitCode{code: exitFailure, err: fmt.Errorf("%d of %d workers failed to bake", failed, len(results))}
	}
	return nil
}

// loadConfigFile loads one fleet member's file, with the environment over
// it (the same for every worker).
func loadConfigFile(path string) (*config.Config, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// prefixWriter writes each line it is given behind prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	var out strings.Builder
	for _, l := range lines {
		if l != "" {
			out.WriteString(p.prefix + l)
		}
	}
	if _, err := io.WriteString(p.w, out.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// lockedWriter serialises the writes of several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
