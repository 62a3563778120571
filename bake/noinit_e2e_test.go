package bake_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/lab/labtest"
	"github.com/latentworker/latentworker/lab/master"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
)

// TestBakeSysVInitAndCron proves the guide's SysV init and cron tabs in one
// lab and one bake, on Debian 12 booted with sysvinit-core (no systemd: a
// lab substitute for the distributions without it).
//
// SysV init: bake debian-12-sysvinit (buildbot-worker from PyPI, the init
// script and /etc/default/buildbot-worker, update-rc.d, a real reboot after
// the updates, imaged, its image booted and checked), then the master boots
// the new AMI and its worker connects and builds.
//
// Cron: an instance of that AMI loses its SysV entry (no service manager
// starts the worker any more) and is set up as Debian 12 with pip, whose
// systemd unit cannot serve here: the guide's cron job takes over
// (@reboot buildbot-worker restart DIR). The worker is then killed, leaving
// its twistd.pid behind as a crash does, and the guest reboots for real:
// cron's restart brings the worker back, with a new pid, to the master.
func TestBakeSysVInitAndCron(t *testing.T) {
	// The base is built (or found in the cache) before the lab is up, not
	// within the bake's wait for its builder.
	labtest.RequireImage(t, "debian-12-sysvinit")
	e := setupWith(t, "images = [\"debian-12-sysvinit\"]\n")
	e.cfg.Image.Platform = "debian-12-sysvinit"
	if err := e.cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx := context.Background()
	rec := &recorder{t: t, secret: e.password}
	opts := e.options(t, rec)
	opts.TerminateBuilder = true
	start := time.Now()
	res, err := bake.Run(ctx, opts)
	if err != nil {
		t.Fatalf("bake debian-12-sysvinit: %v", err)
	}
	t.Logf("sysvinit bake took %s: %+v", time.Since(start), res.Manifest)
	var sawInit bool
	for _, ev := range rec.events {
		sawInit = sawInit || strings.Contains(ev.Message, "enabling /etc/init.d/buildbot-worker (update-rc.d)")
	}
	if !sawInit {
		t.Errorf("no progress line says the SysV init script was enabled")
	}
	start = time.Now()
	e.lab.BootAndBuild(t, e2eWorker, res.Manifest.ImageID)
	t.Logf("boot and build took %s", time.Since(start))

	// Cron, on an instance of the new image.
	sysv := platform.MustLookup("debian-12-sysvinit")
	c, dial, _ := e.sshInstance(t, res.Manifest.ImageID, sysv, "cron-stale-pid")
	defer func() { c.Close() }()
	progress := lineLogger{t}
	d := &provision.Driver{Platform: sysv, Progress: progress}
	w := e.cfg.ScriptWorker("Debian 12 with sysvinit (lab), cron")
	dir := sysv.WorkerDir(w.Name)
	mc := &master.Client{BaseURL: e.lab.State.MasterURL}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 2*time.Minute); err != nil {
		t.Fatalf("the image's worker, started by its init script: %v", err)
	}
	if err := d.RunScript(ctx, c, "drop-sysv-entry", []byte(`set -eu
/etc/init.d/buildbot-worker stop
update-rc.d -f buildbot-worker remove
rm -f /etc/init.d/buildbot-worker /etc/default/buildbot-worker
`)); err != nil {
		t.Fatalf("removing the SysV entry: %v", err)
	}
	if err := mc.WaitWorkerDisconnected(ctx, e2eWorker, time.Minute); err != nil {
		t.Fatal(err)
	}
	cron := &provision.Driver{Platform: platform.MustLookup("debian-12").WithPip(), Progress: progress}
	if err := cron.Configure(ctx, c, w, e.password); err != nil {
		t.Fatalf("configure half of Debian 12 with pip (no systemd: cron): %v", err)
	}
	line, err := c.Output(ctx, "cat /etc/cron.d/buildbot-worker-"+w.Name, nil)
	if want := "@reboot buildbot-worker cd " + dir + " && /opt/buildbot-worker/bin/buildbot-worker restart " + dir; err != nil || strings.TrimSpace(string(line)) != want {
		t.Fatalf("cron line = %q, %v; want %q", line, err, want)
	}
	if facts, err := cron.Verify(ctx, c, w, e.password); err != nil {
		t.Fatalf("verify the cron-started worker: %v (%+v)", err, facts)
	}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 2*time.Minute); err != nil {
		t.Fatalf("worker started by the configure half: %v", err)
	}

	// A crash: the worker killed, its twistd.pid left behind.
	stale, err := c.Output(ctx, "sudo -n sh -c 'p=$(cat "+dir+"/twistd.pid) && kill -KILL \"$p\" && while kill -0 \"$p\" 2>/dev/null; do sleep 0.1; done && cat "+dir+"/twistd.pid'", nil)
	if err != nil || strings.TrimSpace(string(stale)) == "" {
		t.Fatalf("killing the worker: %q, %v", stale, err)
	}
	stalePID := strings.TrimSpace(string(stale))
	if err := mc.WaitWorkerDisconnected(ctx, e2eWorker, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("worker killed; twistd.pid still names pid %s", stalePID)
	start = time.Now()
	if c, err = cron.Reboot(ctx, c, dial); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	if out, err := c.Output(ctx, "sudo -n cat "+dir+"/twistd.pid 2>/dev/null || true", nil); err == nil && strings.TrimSpace(string(out)) == stalePID {
		t.Logf("after the reboot, before cron's restart: twistd.pid still names %s", stalePID)
	}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 3*time.Minute); err != nil {
		t.Fatalf("the worker after the reboot (cron's restart): %v", err)
	}
	facts, err := cron.Verify(ctx, c, w, e.password)
	if err != nil {
		t.Fatalf("verify after the reboot: %v (%+v)", err, facts)
	}
	if facts.ServiceActive != "active" || facts.ServiceStartedThisBoot != "yes" {
		t.Errorf("after the reboot: active %q, started this boot %q; want active, yes", facts.ServiceActive, facts.ServiceStartedThisBoot)
	}
	now, err := c.Output(ctx, "sudo -n cat "+dir+"/twistd.pid", nil)
	if err != nil || strings.TrimSpace(string(now)) == stalePID {
		t.Errorf("twistd.pid after the reboot = %q, %v; want a new pid, not the stale %s", now, err, stalePID)
	}
	t.Logf("reboot to a connected worker (cron @reboot restart over a stale twistd.pid) took %s", time.Since(start))
}
