package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/machine"
	"github.com/latentworker/latentworker/lab/moto"
)

// ErrNotRoot is returned when the lab is run without root: it mounts
// overlays and boots containers.
var ErrNotRoot = errors.New("latentlab needs root: it mounts overlay filesystems and boots systemd-nspawn containers (run it as root, with a PATH that finds moto_server)")

// RequireRoot fails unless the process runs as root.
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

// ErrNotUp is returned by Env and Status when no lab runs in the state dir.
var ErrNotUp = errors.New("no lab is up (start one with `latentlab up`)")

// Running returns the state of the lab in o.StateDir if its daemon is alive.
func Running(o Options) (State, bool) {
	st, err := ReadState(o.StateDir)
	if err != nil || !alive(st.PID, st.PIDStart) {
		return st, false
	}
	return st, true
}

// Up starts the lab daemon (self, with the `serve` command) unless one is up
// already, and returns once it is ready. Progress goes to log.
func Up(ctx context.Context, o Options, self string, log io.Writer) (State, error) {
	if err := RequireRoot(); err != nil {
		return State{}, err
	}
	if st, ok := Running(o); ok && st.Ready {
		fmt.Fprintf(log, "latentlab: already up (pid %d)\n", st.PID)
		return st, nil
	}
	cfg, err := LoadConfig(o.ConfigPath)
	if err != nil {
		return State{}, err
	}
	// Clear what a crashed lab left, then build the base images here, in
	// the foreground, so that their progress reaches the terminal.
	if err := Down(o, io.Discard); err != nil {
		return State{}, err
	}
	for _, name := range cfg.Images {
		if _, err := image.EnsureBase(ctx, o.CacheDir, name, log); err != nil {
			return State{}, err
		}
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return State{}, err
	}
	logPath := filepath.Join(o.StateDir, "lab.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return State{}, err
	}
	defer logf.Close()
	_ = os.Truncate(filepath.Join(o.StateDir, "requests.log"), 0)
	args := []string{"serve", "--state-dir", o.StateDir, "--cache-dir", o.CacheDir}
	if o.ConfigPath != "" {
		abs, err := filepath.Abs(o.ConfigPath)
		if err != nil {
			return State{}, err
		}
		args = append(args, "--config", abs)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return State{}, fmt.Errorf("start the lab daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return State{}, fmt.Errorf("the lab daemon exited (%v) before it was ready:\n%s", err, logTail(logPath, 30))
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return State{}, ctx.Err()
		case <-tick.C:
		}
		st, err := ReadState(o.StateDir)
		if err == nil && st.Ready && st.PID == cmd.Process.Pid {
			fmt.Fprintf(log, "latentlab: up in %.1fs (EC2 endpoint %s)\n", time.Since(start).Seconds(), st.Endpoint)
			// The daemon lives on without us: it is in its own session.
			_ = cmd.Process.Release()
			return st, nil
		}
		if time.Since(start) > 3*time.Minute {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return State{}, fmt.Errorf("the lab was not ready after 3 minutes:\n%s", logTail(logPath, 30))
		}
	}
}

// Down stops the lab in o.StateDir: it asks the daemon to take everything
// down, and then, whether or not the daemon was alive, kills what was
// recorded and reaps containers and mounts under the state directory.
func Down(o Options, log io.Writer) error {
	if err := RequireRoot(); err != nil {
		return err
	}
	st, err := ReadState(o.StateDir)
	if err == nil && alive(st.PID, st.PIDStart) {
		fmt.Fprintf(log, "latentlab: stopping the lab (pid %d)\n", st.PID)
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		for i := 0; i < 600 && alive(st.PID, st.PIDStart); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(st.PID, st.PIDStart) {
			fmt.Fprintf(log, "latentlab: the daemon did not stop in 60s; killing it\n")
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
		}
	}
	if _, err := os.Stat(o.StateDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := reap(o.StateDir); err != nil {
		return fmt.Errorf("clean up %s: %w", o.StateDir, err)
	}
	_ = os.Remove(statePath(o.StateDir))
	mps, _ := machine.MountsUnder(o.StateDir)
	if len(mps) > 0 {
		return fmt.Errorf("still mounted after down: %s", strings.Join(mps, ", "))
	}
	fmt.Fprintf(log, "latentlab: down\n")
	return nil
}

// Env renders the shell exports that point AWS clients (this project's
// tools, the AWS CLI, boto3) at the lab.
func Env(st State) string {
	var b strings.Builder
	for _, kv := range labEnv(st) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, v)
	}
	if st.MasterURL != "" {
		fmt.Fprintf(&b, "export LATENTLAB_MASTER_URL=%s\n", st.MasterURL)
		fmt.Fprintf(&b, "export LATENTLAB_MASTER_PB=%s\n", st.MasterPB)
	}
	if st.CPythonGit != "" {
		fmt.Fprintf(&b, "export LATENTLAB_CPYTHON_GIT=%s\n", st.CPythonGit)
	}
	return b.String()
}

// Status describes the lab for humans.
func Status(o Options) (string, error) {
	st, ok := Running(o)
	if !ok {
		return "", ErrNotUp
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lab:        up since %s (pid %d)\n", st.Started.Local().Format(time.DateTime), st.PID)
	fmt.Fprintf(&b, "endpoint:   %s (region %s; every region answers)\n", st.Endpoint, st.Region)
	fmt.Fprintf(&b, "moto:       %s (pid %d)\n", st.MotoURL, st.MotoPID)
	if st.IAMEnforcement {
		fmt.Fprintf(&b, "IAM:        enforced (actions only); the lab's key is %s's %s\n", moto.AdminUser, st.AccessKeyID)
	}
	if st.MasterURL != "" {
		fmt.Fprintf(&b, "master:     %s, workers connect to %s (pid %d)\n", st.MasterURL, st.MasterPB, st.MasterPID)
	}
	if st.CPythonGit != "" {
		fmt.Fprintf(&b, "cpython:    %s (branch %s)\n", st.CPythonGit, st.CPythonBranch)
	}
	ids, _ := filepath.Glob(filepath.Join(o.StateDir, "i", "i-*"))
	fmt.Fprintf(&b, "instances:  %d with a body (addresses from %s)\n", len(ids), st.Addresses)
	mps, _ := machine.MountsUnder(o.StateDir)
	fmt.Fprintf(&b, "mounts:     %d\n", len(mps))
	fmt.Fprintf(&b, "state:      %s (request log %s)\n", o.StateDir, st.RequestLog)
	return b.String(), nil
}

func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
