package status

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/latentworker/latentworker/lab/master"
)

// requireBuildbot skips without Debian's buildbot master and worker (or
// under -short), and fails when CI=true.
func requireBuildbot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a buildbot master and worker")
	}
	for _, p := range []string{master.DefaultBuildbot, "/usr/bin/buildbot-worker"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required when CI=true", p)
			}
			t.Skipf("needs %s", p)
		}
	}
}

// TestStatusAgainstMaster: a real master and a real worker on the host.
// Connected: no problem. Disconnected: offline once it has been so longer
// than OfflineAfter, as remembered in the state file. A name the master
// does not know: offline, with a warning. Builds are counted.
func TestStatusAgainstMaster(t *testing.T) {
	requireBuildbot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	const name, password = "status-w1", "status-test-pw"
	m, err := master.Start(ctx, master.Config{Dir: filepath.Join(tmp, "master"), Workers: []master.Worker{{Name: name, Password: password}}})
	if err != nil {
		t.Fatalf("master: %v", err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })

	wdir := filepath.Join(tmp, "worker")
	if out, err := exec.CommandContext(ctx, "/usr/bin/buildbot-worker", "create-worker", "--keepalive=60", wdir, m.PBAddr(), name, password).CombinedOutput(); err != nil {
		t.Fatalf("create-worker: %v\n%s", err, out)
	}
	w := exec.Command("/usr/bin/buildbot-worker", "start", "--nodaemon", wdir)
	w.Dir = wdir
	w.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + wdir}
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	stopWorker := func() {
		_ = syscall.Kill(-w.Process.Pid, syscall.SIGTERM)
		_ = w.Wait()
	}
	t.Cleanup(func() { _ = syscall.Kill(-w.Process.Pid, syscall.SIGKILL) })
	c := m.Client()
	if err := c.WaitWorkerConnected(ctx, name, time.Minute); err != nil {
		t.Fatal(err)
	}
	req, err := c.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "status test")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.WaitBuild(ctx, req, time.Minute); err != nil || !b.Succeeded() {
		t.Fatalf("build: %+v, %v", b, err)
	}

	stateFile := filepath.Join(tmp, "state", "status.json")
	opts := Options{Worker: name, MasterURL: m.URL(), OfflineAfter: 2 * time.Second, StateFile: stateFile}
	r, err := Get(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Known || !r.Connected || len(r.Problems) != 0 || r.BuildsLastDay != 1 || r.LastBuild == nil || r.LastBuild.Result != "success" {
		t.Errorf("connected worker: %+v (last build %+v); want known, connected, no problem, 1 build today, last a success", r, r.LastBuild)
	}

	stopWorker()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if ok, _ := c.WorkerConnected(ctx, name); !ok {
			break
		}
	}
	r, err = Get(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected || len(r.Problems) != 0 {
		t.Errorf("just disconnected: %+v; want not connected, and not yet a problem", r)
	}
	time.Sleep(3 * time.Second)
	r, err = Get(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected || !slices.Contains(r.Problems, ProblemOffline) || r.Offline(time.Now()) < 2*time.Second {
		t.Errorf("disconnected for 3s with OfflineAfter 2s: %+v; want the offline problem", r)
	}

	r, err = Get(ctx, Options{Worker: "never-seen", MasterURL: m.URL(), OfflineAfter: time.Hour, StateFile: stateFile})
	if err != nil {
		t.Fatal(err)
	}
	if r.Known || !slices.Contains(r.Problems, ProblemOffline) || len(r.Warnings) == 0 {
		t.Errorf("unknown worker: %+v; want unknown, offline, with a warning", r)
	}
}
