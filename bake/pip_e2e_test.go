package bake_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/lab/master"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
)

// TestBakePipE2E bakes Debian 12 the guide's pip way (image.install =
// "pip"): buildbot-worker from PyPI (through the lab's mirror) in a venv,
// the system user buildbot-worker, /var/lib/buildbot/worker/NAME and the
// guide's unit; the new AMI boots and its worker connects to the master and
// builds. A refresh from it runs the same Setup a second time on the baked
// disk (idempotence) and its image works too.
func TestBakePipE2E(t *testing.T) {
	e := setup(t)
	e.cfg.Image.Install = "pip"
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
		t.Fatalf("bake with pip: %v", err)
	}
	t.Logf("pip bake took %s: %+v", time.Since(start), res.Manifest)
	var sawPip bool
	for _, ev := range rec.events {
		if strings.Contains(ev.Message, "installing buildbot-worker with pip into /opt/buildbot-worker") {
			sawPip = true
		}
	}
	if !sawPip {
		t.Errorf("no progress line says buildbot-worker was installed with pip")
	}
	start = time.Now()
	e.lab.BootAndBuild(t, e2eWorker, res.Manifest.ImageID)
	t.Logf("boot and build took %s", time.Since(start))

	opts = e.options(t, rec)
	opts.FromPrevious, opts.TerminateBuilder = true, true
	start = time.Now()
	res2, err := bake.Run(ctx, opts)
	if err != nil {
		t.Fatalf("refresh with pip (Setup a second time): %v", err)
	}
	t.Logf("pip refresh took %s", time.Since(start))
	e.lab.BootAndBuild(t, e2eWorker, res2.Manifest.ImageID)
}

// TestRPMConfigureHalf runs the configure half of Fedora's Setup
// (scripts.Configure) in a Debian guest laid out as the RPM lays a machine
// out (testdata/rpm-layout.sh: user buildbot-worker, /var/lib/buildbot/worker,
// a templated unit running /usr/bin/buildbot-worker, buildbot-worker from
// PyPI), twice, checks it with Fedora's Verify, reboots the guest and waits
// for the worker, started at boot by the RPM-shaped unit, to connect to the
// master. dnf, EPEL, CRB and SELinux cannot run here (no RPM repository is
// reachable): that half is only golden-tested and shellchecked.
func TestRPMConfigureHalf(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	fedora := platform.MustLookup("fedora")
	deb := platform.MustLookup("debian-12")

	imgs, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{deb.BaseOwner}, Filters: []types.Filter{
		{Name: aws.String("name"), Values: []string{deb.BaseName}}, {Name: aws.String("architecture"), Values: []string{"x86_64"}},
	}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("DescribeImages(%s): %d images, %v", deb.BaseName, len(imgs.Images), err)
	}
	sort.Slice(imgs.Images, func(i, j int) bool {
		return aws.ToString(imgs.Images[i].CreationDate) > aws.ToString(imgs.Images[j].CreationDate)
	})
	c, dial, _ := e.sshInstance(t, aws.ToString(imgs.Images[0].ImageId), deb, "rpm-layout")
	defer func() { c.Close() }()

	progress := lineLogger{t}
	d := &provision.Driver{Platform: fedora, Progress: progress}
	layout, err := os.ReadFile(filepath.Join("testdata", "rpm-layout.sh"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.RunScript(ctx, c, "rpm-layout", layout); err != nil {
		t.Fatalf("laying the guest out as the RPM does: %v", err)
	}
	t.Logf("RPM layout (venv, pip install buildbot-worker, user, unit) took %s", time.Since(start))
	w := e.cfg.ScriptWorker("Fedora Linux (RPM-shaped lab guest)")
	for run := 1; run <= 2; run++ {
		start := time.Now()
		if err := d.Configure(ctx, c, w, e.password); err != nil {
			t.Fatalf("configure half, run %d: %v", run, err)
		}
		t.Logf("configure half, run %d, took %s", run, time.Since(start))
	}
	if _, err := d.Verify(ctx, c, w, e.password); err != nil {
		t.Fatalf("Fedora's verify after the configure half: %v", err)
	}
	// The worker must come back by itself after a reboot: the unit the RPM
	// ships, enabled by the configure half.
	mc := &master.Client{BaseURL: e.lab.State.MasterURL}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 2*time.Minute); err != nil {
		t.Fatalf("worker before the reboot: %v", err)
	}
	bootBefore, err := c.Output(ctx, "cat /proc/sys/kernel/random/boot_id", nil)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if c, err = d.Reboot(ctx, c, dial); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	bootAfter, err := c.Output(ctx, "cat /proc/sys/kernel/random/boot_id", nil)
	if err != nil || string(bootAfter) == string(bootBefore) {
		t.Fatalf("boot id after the reboot = %q, %v; before %q", bootAfter, err, bootBefore)
	}
	// The unit started by itself at this boot (active, with a start time on
	// this boot's clock), and the master sees the worker.
	var facts scripts.Facts
	for deadline := time.Now().Add(2 * time.Minute); ; {
		facts, err = d.Verify(ctx, c, w, e.password)
		if err != nil {
			t.Fatalf("Fedora's verify after the reboot: %v", err)
		}
		if up, _ := facts.ServiceUp(); up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker's unit did not come up after the reboot: %+v", facts)
		}
		time.Sleep(2 * time.Second)
	}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 2*time.Minute); err != nil {
		t.Fatalf("worker after the reboot: %v (facts %+v)", err, facts)
	}
	t.Logf("reboot to connected worker took %s; facts %+v", time.Since(start), facts)
}

// sshInstance launches an instance of ami with a new key pair called
// keyName, waits for it and connects to it as p's login user, its host key
// pinned from the console; dial connects again (after a reboot). The
// instance is terminated when the test ends.
func (e *env) sshInstance(t *testing.T, ami string, p *platform.Platform, keyName string) (*provision.Client, func(context.Context) (*provision.Client, error), string) {
	t.Helper()
	ctx := context.Background()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String(keyName), PublicKeyMaterial: ssh.MarshalAuthorizedKey(sshPub)}); err != nil {
		t.Fatal(err)
	}
	run, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small, KeyName: aws.String(keyName),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	t.Cleanup(func() {
		_, _ = e.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		_ = ec2.NewInstanceTerminatedWaiter(e.ec2).Wait(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
	})
	out, err := ec2.NewInstanceRunningWaiter(e.ec2).WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	addr := aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress)
	var keys provision.HostKeys
	deadline := time.Now().Add(time.Minute)
	for {
		co, err := e.ec2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id), Latest: aws.Bool(true)})
		if err == nil {
			text, _ := base64.StdEncoding.DecodeString(aws.ToString(co.Output))
			if keys, err = provision.ParseHostKeys(p.HostKeys, text); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("host keys of %s: %v", id, err)
		}
		time.Sleep(time.Second)
	}
	target := provision.Target{Addr: net.JoinHostPort(addr, "22"), User: p.SSHUser, Signer: signer,
		HostKey: keys.Check, HostKeyAlgorithms: keys.Algorithms()}
	dial := func(ctx context.Context) (*provision.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return provision.Dial(dctx, target)
	}
	c, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, dial, id
}

type lineLogger struct{ t *testing.T }

func (l lineLogger) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
