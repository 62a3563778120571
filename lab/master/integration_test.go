package master

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const buildbotWorker = "/usr/bin/buildbot-worker"

// requireBuildbot skips the test when Debian's buildbot master and worker
// are missing or the test does not run as root, and fails instead when
// CI=true, so that CI cannot pass without running it.
func requireBuildbot(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range []string{DefaultBuildbot, buildbotWorker} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: not skipping)")
	}
	t.Skip(msg)
}

// TestMasterRunsBuild starts a real master (Debian's buildbot) and a real
// worker on the host, and runs a build on it.
func TestMasterRunsBuild(t *testing.T) {
	requireBuildbot(t)
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a buildbot master and worker (~10 s)")
	}
	testMasterRunsBuild(t, Debian())
}

// TestPipMasterRunsBuild is TestMasterRunsBuild with buildbot 4.3.0 (as
// CPython's master pins it) from PyPI, on Debian 13's Python 3.13.
func TestPipMasterRunsBuild(t *testing.T) {
	requireBuildbot(t)
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a buildbot master and worker (~10 s; the first run builds a root filesystem and a venv, ~2 min)")
	}
	testMasterRunsBuild(t, RequirePipFlavour(t, "4.3.0"))
}

func testMasterRunsBuild(t *testing.T, flavour Flavour) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	tmp := t.TempDir()

	const name, password = "lab-w1", "test-only-pw'\"\\"
	t0 := time.Now()
	// With the CPython builder, so that both buildbots load its factory
	// (the build below is the trivial builder's).
	m, err := Start(ctx, Config{
		Dir:     filepath.Join(tmp, "master"),
		Workers: []Worker{{Name: name, Password: password, ParallelTests: 2}},
		Flavour: flavour,
		CPython: &CPythonBuilder{Repo: "http://127.0.0.1:9/cpython.git", Branch: "3.13"},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("%s master started in %v: pid %d, %s, pb %s", flavour.Name, time.Since(t0).Round(time.Millisecond), m.PID(), m.URL(), m.PBAddr())
	masterStopped := false
	defer func() {
		if !masterStopped {
			if err := m.Stop(context.Background()); err != nil {
				t.Errorf("Stop: %v", err)
			}
		}
	}()

	fi, err := os.Stat(filepath.Join(m.Dir(), "master.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("master.cfg mode = %v; want 0600", perm)
	}
	assertLoopbackOnly(t, m)

	// A real worker on the host.
	wdir := filepath.Join(tmp, "worker")
	t1 := time.Now()
	out, err := exec.CommandContext(ctx, buildbotWorker, "create-worker", "--keepalive=60",
		wdir, m.PBAddr(), name, password).CombinedOutput()
	if err != nil {
		t.Fatalf("create-worker: %v\n%s", err, out)
	}
	t.Logf("worker created in %v", time.Since(t1).Round(time.Millisecond))
	w := startWorker(t, wdir)
	workerStopped := false
	defer func() {
		if !workerStopped {
			stopGroup(t, w)
		}
	}()

	c := m.Client()
	t2 := time.Now()
	if err := c.WaitWorkerConnected(ctx, name, 30*time.Second); err != nil {
		t.Fatalf("WaitWorkerConnected: %v\n%s\n%s", err, m.LogTail(), logTail(filepath.Join(wdir, "twistd.log"), 0))
	}
	t.Logf("worker connected %v after it started", time.Since(t2).Round(time.Millisecond))

	if ok, err := c.WorkerConnected(ctx, "no-such-worker"); !errors.Is(err, ErrNotFound) {
		t.Errorf("WorkerConnected(no-such-worker) = %v, %v; want ErrNotFound", ok, err)
	}

	t3 := time.Now()
	brid, err := c.ForceBuild(ctx, DefaultSchedulerName, DefaultBuilderName, "integration test")
	if err != nil {
		t.Fatalf("ForceBuild: %v", err)
	}
	b, err := c.WaitBuild(ctx, brid, 30*time.Second)
	if err != nil {
		t.Fatalf("WaitBuild(%d): %v", brid, err)
	}
	t.Logf("build %d (request %d) finished in %v: %s", b.Number, brid, time.Since(t3).Round(time.Millisecond), b.StateString)
	if !b.Succeeded() {
		t.Errorf("build %+v did not succeed\n%s", b, m.LogTail())
	}

	stepOut, err := c.StepOutput(ctx, b.BuildID, "hello")
	if err != nil {
		t.Fatalf("StepOutput: %v", err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello from " + host + "\n"; stepOut != want {
		t.Errorf("StepOutput(%d, hello) = %q; want %q", b.BuildID, stepOut, want)
	}

	// A username not of the form "Name <email>" is refused.
	bad := *c
	bad.User = "nobody"
	if _, err := bad.ForceBuild(ctx, DefaultSchedulerName, DefaultBuilderName, "bad user"); err == nil {
		t.Errorf("ForceBuild with user %q succeeded; want an error", bad.User)
	}

	stopGroup(t, w)
	workerStopped = true
	t4 := time.Now()
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	masterStopped = true
	t.Logf("master stopped in %v", time.Since(t4).Round(time.Millisecond))
	select {
	case <-m.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	for _, pgid := range []int{m.PID(), w.Process.Pid} {
		if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still exists after stop (kill 0: %v)", pgid, err)
		}
	}
	if out, err := exec.Command("pgrep", "-a", "-f", tmp).Output(); err == nil {
		t.Errorf("processes left over:\n%s", out)
	}
	if err := m.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// assertLoopbackOnly checks that the master's PB port accepts connections
// from another loopback address (as from an instance's 127.0.0.N) and that
// its ports are not reachable on a non-loopback address of this host, if it
// has one.
func assertLoopbackOnly(t *testing.T, m *Master) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 7)}, Timeout: time.Second}
	conn, err := d.Dial("tcp4", m.PBAddr())
	if err != nil {
		t.Errorf("connect to PB port %s from 127.0.0.7: %v", m.PBAddr(), err)
	} else {
		conn.Close()
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.Config()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
			continue
		}
		for _, port := range []int{cfg.PBPort, cfg.WWWPort} {
			addr := net.JoinHostPort(ipn.IP.String(), strconv.Itoa(port))
			if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				conn.Close()
				t.Errorf("master port reachable on %s; want loopback only", addr)
			}
		}
		return
	}
}

// startWorker runs `buildbot-worker start --nodaemon` in its own process
// group.
func startWorker(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(buildbotWorker, "start", "--nodaemon", dir)
	cmd.Dir = dir
	// Not the test's environment: the build log would show it.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "LANG=C.UTF-8"}
	log, err := os.Create(filepath.Join(dir, "worker.out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	return cmd
}

// stopGroup stops cmd's process group: SIGTERM, then SIGKILL after 10 s.
func stopGroup(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("worker %d ignored SIGTERM; killing", pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // stragglers, if any
}

// TestStartFailures checks that a master that cannot start leaves no
// process and reports its log, and that Start retries when someone takes a
// port it picked.
func TestStartFailures(t *testing.T) {
	requireBuildbot(t)
	t.Parallel()
	if testing.Short() {
		t.Skip("starts buildbot masters (~10 s)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "master")
	workers := []Worker{{Name: "w1", Password: "pw"}}

	t.Run("config error", func(t *testing.T) {
		_, err := Start(ctx, Config{Dir: dir, Workers: workers, Extra: "raise Exception('boom from extra')"})
		if err == nil {
			t.Fatal("Start with a broken master.cfg succeeded")
		}
		if !strings.Contains(err.Error(), "boom from extra") {
			t.Errorf("Start error does not show the log:\n%v", err)
		}
		assertNoProcesses(t, dir)
	})

	t.Run("port taken", func(t *testing.T) {
		taken, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		calls := 0
		pick := func(host string, pb, www int) (int, int, error) {
			calls++
			pb, www, err := freePorts(host, pb, www)
			if calls == 1 {
				www = taken.Addr().(*net.TCPAddr).Port
			}
			return pb, www, err
		}
		m, err := Start(ctx, Config{Dir: dir, Workers: workers, pickPorts: pick}) // reuses dir
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer m.Stop(context.Background())
		if calls != 2 {
			t.Errorf("ports picked %d times; want 2", calls)
		}
		if got := m.Config().WWWPort; got == taken.Addr().(*net.TCPAddr).Port {
			t.Errorf("master uses the taken port %d", got)
		}
		if err := m.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoProcesses(t, dir)
	})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := Start(ctx, Config{Dir: dir, Workers: workers})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start with a 300ms deadline = %v; want context.DeadlineExceeded", err)
		}
		assertNoProcesses(t, dir)
	})

	t.Run("not installed", func(t *testing.T) {
		_, err := Start(ctx, Config{Dir: dir, Workers: workers, Buildbot: "/nonexistent/buildbot"})
		if !errors.Is(err, ErrNotInstalled) {
			t.Errorf("Start with a missing buildbot = %v; want ErrNotInstalled", err)
		}
	})

	t.Run("taken port given", func(t *testing.T) {
		taken, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		port := taken.Addr().(*net.TCPAddr).Port
		_, err = Start(ctx, Config{Dir: dir, Workers: workers, PBPort: port})
		if err == nil || !strings.Contains(err.Error(), "Address already in use") {
			t.Errorf("Start with taken PB port %d = %v; want an error showing the port in use", port, err)
		}
		assertNoProcesses(t, dir)
	})
}

// assertNoProcesses fails if any process mentions dir in its command line.
func assertNoProcesses(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("pgrep", "-a", "-f", dir).Output(); err == nil {
		t.Errorf("processes left over:\n%s", out)
	}
}
