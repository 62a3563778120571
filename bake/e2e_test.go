package bake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/labtest"
	"github.com/latentworker/latentworker/lab/master"
)

const e2eWorker = "lw-e2e"

// recorder collects events and checks that none carries a secret.
type recorder struct {
	mu     sync.Mutex
	events []bake.Event
	t      *testing.T
	secret string
}

func (r *recorder) Event(e bake.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(e)
	if strings.Contains(string(b), r.secret) {
		r.t.Errorf("event carries the password: %s", b)
	}
	if e.Type != bake.EventProgress {
		r.t.Logf("event %s", b)
	}
	r.events = append(r.events, e)
}

type env struct {
	lab      *labtest.Lab
	ec2      *ec2.Client
	sts      *sts.Client
	password string
	cfg      *config.Config
}

func setup(t *testing.T) *env {
	t.Helper()
	labtest.Require(t)
	dir := t.TempDir()
	password := "pw-" + fleet.NewRunID()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := labtest.Start(t, fmt.Sprintf("[master]\n[[master.workers]]\nname = %q\npassword_file = %q\n", e2eWorker, pwFile))
	cfg := config.Default()
	cfg.Worker.Name = e2eWorker
	cfg.Worker.Master = l.State.MasterPB
	cfg.Worker.AdminName = "Lab Admin"
	cfg.Worker.AdminEmail = "admin@example.com"
	cfg.Worker.PasswordFile = pwFile
	cfg.AWS.Region = lab.DefaultRegion
	cfg.AWS.InstanceType = "t3.small"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return &env{lab: l, ec2: l.EC2(""), sts: sts.NewFromConfig(l.AWS), password: password, cfg: cfg}
}

func (e *env) options(t *testing.T, rec *recorder) bake.Options {
	return bake.Options{
		Config: e.cfg, Password: config.NewSecret(e.password),
		EC2: e.ec2, STS: e.sts, Region: lab.DefaultRegion, Endpoint: e.lab.State.Endpoint,
		Events:   rec,
		Timeouts: bake.Timeouts{Poll: time.Second},
	}
}

func TestBakeE2E(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	rec := &recorder{t: t, secret: e.password}
	opts := e.options(t, rec)
	opts.ManifestPath = filepath.Join(t.TempDir(), "manifest.json")
	start := time.Now()
	stopScan := scanArgv(t, e.password)
	res, err := bake.Run(ctx, opts)
	stopScan()
	if err != nil {
		t.Fatalf("bake: %v", err)
	}
	if b, err := os.ReadFile(e.lab.State.RequestLog); err != nil || strings.Contains(string(b), e.password) {
		t.Errorf("lab request log %s: read error %v; has the password: %v", e.lab.State.RequestLog, err, err == nil)
	}
	t.Logf("bake took %s: %+v", time.Since(start), res.Manifest)
	m := res.Manifest
	if !strings.HasPrefix(m.ImageID, "ami-") || !strings.HasPrefix(m.SourceName, "debian-12-amd64-") || m.Replaces != "" {
		t.Errorf("manifest = %+v; want a new AMI from the Debian catalogue replacing nothing", m)
	}
	b, err := os.ReadFile(opts.ManifestPath)
	if err != nil || strings.Contains(string(b), e.password) || !strings.Contains(string(b), m.ImageID) {
		t.Errorf("manifest file: %v; names the AMI: %v; has the password: %v", err, strings.Contains(string(b), m.ImageID), strings.Contains(string(b), e.password))
	}
	checkNoTemporaries(t, e.ec2, m.RunID)

	bootAndBuild(t, e, m.ImageID)

	t.Run("from previous", func(t *testing.T) {
		opts := e.options(t, rec)
		opts.FromPrevious = true
		opts.TerminateBuilder = true
		res2, err := bake.Run(ctx, opts)
		if err != nil {
			t.Fatalf("bake --from-previous: %v", err)
		}
		if res2.Manifest.SourceAMI != m.ImageID || res2.Manifest.Replaces != m.ImageID {
			t.Errorf("refresh: source %s replaces %s; want both %s", res2.Manifest.SourceAMI, res2.Manifest.Replaces, m.ImageID)
		}
		checkNoTemporaries(t, e.ec2, res2.Manifest.RunID)
		bootAndBuild(t, e, res2.Manifest.ImageID)
	})
}

// bootAndBuild launches an instance from ami the way buildbot would and
// checks that its worker connects and a forced build succeeds.
func bootAndBuild(t *testing.T, e *env, ami string) {
	t.Helper()
	ctx := context.Background()
	out, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		t.Fatalf("RunInstances(%s): %v", ami, err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	defer func() {
		if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Errorf("TerminateInstances(%s): %v", id, err)
		}
		_ = ec2.NewInstanceTerminatedWaiter(e.ec2).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
	}()
	if err := ec2.NewInstanceRunningWaiter(e.ec2).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 3*time.Minute); err != nil {
		t.Fatalf("instance %s from %s: %v", id, ami, err)
	}
	mc := &master.Client{BaseURL: e.lab.State.MasterURL}
	if err := mc.WaitWorkerConnected(ctx, e2eWorker, 3*time.Minute); err != nil {
		t.Fatalf("worker %s on %s: %v", e2eWorker, id, err)
	}
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "bake e2e")
	if err != nil {
		t.Fatalf("ForceBuild: %v", err)
	}
	build, err := mc.WaitBuild(ctx, req, 3*time.Minute)
	if err != nil || !build.Succeeded() {
		t.Fatalf("build on %s: %+v, %v; want success", ami, build, err)
	}
	// Wait for the worker to go away before the next boot uses its name.
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Errorf("TerminateInstances(%s): %v", id, err)
	}
	_ = ec2.NewInstanceTerminatedWaiter(e.ec2).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if ok, _ := mc.WorkerConnected(ctx, e2eWorker); !ok {
			break
		}
		time.Sleep(time.Second)
	}
}

// checkNoTemporaries fails when a key pair, security group or running
// verify instance of run is left.
func checkNoTemporaries(t *testing.T, c *ec2.Client, run string) {
	t.Helper()
	left := leftovers(t, c, run)
	for _, l := range left {
		if strings.HasPrefix(l, "key ") || strings.Contains(l, "role=verify") {
			t.Errorf("run %s left %s", run, l)
		}
	}
}

// leftovers lists what run created that still exists.
func leftovers(t *testing.T, c *ec2.Client, run string) []string {
	t.Helper()
	ctx := context.Background()
	f := []types.Filter{fleet.RunFilter(run)}
	var out []string
	ins, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ins.Reservations {
		for _, i := range r.Instances {
			if i.State.Name == types.InstanceStateNameTerminated {
				continue
			}
			role := ""
			for _, tag := range i.Tags {
				if aws.ToString(tag.Key) == fleet.TagRole {
					role = aws.ToString(tag.Value)
				}
			}
			out = append(out, fmt.Sprintf("instance %s (%s) role=%s", aws.ToString(i.InstanceId), i.State.Name, role))
		}
	}
	kp, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kp.KeyPairs {
		out = append(out, "key "+aws.ToString(k.KeyName))
	}
	sg, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sg.SecurityGroups {
		out = append(out, "security group "+aws.ToString(g.GroupId))
	}
	im, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range im.Images {
		out = append(out, "image "+aws.ToString(i.ImageId))
	}
	sn, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sn.Snapshots {
		out = append(out, "snapshot "+aws.ToString(s.SnapshotId))
	}
	return out
}

// TestCancelAtStepBoundaries cancels a run as each step after preflight
// starts (a few of them with -short) and checks that nothing tagged with its
// run ID is left: no instance, key pair, security group, image or snapshot.
func TestCancelAtStepBoundaries(t *testing.T) {
	e := setup(t)
	var boundaries []string
	for _, s := range bake.Steps()[1:] {
		boundaries = append(boundaries, s.Name)
	}
	if testing.Short() {
		boundaries = []string{bake.StepSecurityGroup, bake.StepLaunch, bake.StepConnect, bake.StepWaitImage, bake.StepManifest}
	}
	for _, at := range boundaries {
		t.Run(at, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			var steps []bake.Step
			for _, s := range bake.Steps() {
				if s.Name == at {
					run := s.Run
					s.Run = func(ctx context.Context, st *bake.State) error {
						cancel(errors.New("test: cancelled at " + at))
						return run(ctx, st)
					}
				}
				steps = append(steps, s)
			}
			rec := &recorder{t: t, secret: e.password}
			opts := e.options(t, rec)
			opts.Steps = steps
			opts.RunID = fleet.NewRunID()
			res, err := bake.Run(ctx, opts)
			if err == nil {
				t.Fatalf("bake cancelled at %s succeeded", at)
			}
			if strings.Contains(err.Error(), e.password) {
				t.Errorf("error carries the password")
			}
			t.Logf("bake cancelled at %s: %v; leftovers %v", at, err, res.Leftovers)
			if left := leftovers(t, e.ec2, opts.RunID); len(left) > 0 {
				t.Errorf("cancel at %s left %v", at, left)
			}
		})
	}
}

var _ = net.JoinHostPort

// scanArgv reads every process's argv on the host (the lab's instances are
// containers whose processes the host sees) until the returned function is
// called, and fails the test if one holds secret.
func scanArgv(t *testing.T, secret string) func() {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	scans := 0
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range paths {
				if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), secret) {
					t.Errorf("%s holds the password: %q", p, strings.ReplaceAll(string(b), secret, "[PASSWORD]"))
				}
			}
			scans++
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		t.Logf("scanned every process's argv %d times: no password", scans)
	}
}
