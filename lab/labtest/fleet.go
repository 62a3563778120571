package labtest

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/master"
)

// Diagnose returns what explains a worker that did not connect or build:
// the end of instance id's console and of the lab master's log.
func (l *Lab) Diagnose(id string) string {
	var sb strings.Builder
	out, err := l.EC2("").GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(id), Latest: aws.Bool(true)})
	if err == nil {
		b, _ := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
		fmt.Fprintf(&sb, "--- the end of %s's console:\n%s\n", id, lastLines(string(b), 40))
	} else {
		fmt.Fprintf(&sb, "--- the console of %s: %v\n", id, err)
	}
	if b, err := os.ReadFile(filepath.Join(l.State.StateDir, "master", "twistd.log")); err == nil {
		fmt.Fprintf(&sb, "--- the end of the lab master's log:\n%s\n", lastLines(string(b), 40))
	}
	return sb.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// BootAndBuild launches an instance from ami the way buildbot would and
// checks that its worker connects and a forced build succeeds.
func (l *Lab) BootAndBuild(t testing.TB, worker, ami string) {
	t.Helper()
	l.BootAndBuildIn(t, "", worker, ami)
}

// BootAndBuildIn is BootAndBuild in region ("" the lab's default).
func (l *Lab) BootAndBuildIn(t testing.TB, region, worker, ami string) {
	t.Helper()
	ctx := context.Background()
	mc, id, done := l.boot(t, region, worker, ami, types.InstanceTypeT3Small)
	defer done()
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "bake e2e")
	if err != nil {
		t.Fatalf("ForceBuild: %v", err)
	}
	build, err := mc.WaitBuild(ctx, req, 3*time.Minute)
	if err != nil || !build.Succeeded() {
		t.Fatalf("build on %s: %+v, %v; want success\n%s", ami, build, err, l.Diagnose(id))
	}
}

// boot launches an instance of ami in region the way buildbot would and
// waits until its worker is connected to the lab master. done terminates
// the instance and waits until the worker is gone, so that the next boot
// can use its name: the master would refuse a second connection while it
// shows the stale one.
func (l *Lab) boot(t testing.TB, region, worker, ami string, typ types.InstanceType) (mc *master.Client, id string, done func()) {
	t.Helper()
	c := l.EC2(region)
	ctx := context.Background()
	mc = &master.Client{BaseURL: l.State.MasterURL}
	// An earlier instance of the worker (a bake's verify instance, the last
	// boot) must be gone from the master first: its stale connection would
	// pass for this instance's, and the new one be refused.
	if err := mc.WaitWorkerDisconnected(ctx, worker, 2*time.Minute); err != nil {
		t.Fatalf("before booting %s: %v", ami, err)
	}
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: typ, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		t.Fatalf("RunInstances(%s): %v", ami, err)
	}
	id = aws.ToString(out.Instances[0].InstanceId)
	done = func() {
		if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Errorf("TerminateInstances(%s): %v", id, err)
		}
		_ = ec2.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
		_ = mc.WaitWorkerDisconnected(ctx, worker, time.Minute)
	}
	if err := ec2.NewInstanceRunningWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 3*time.Minute); err != nil {
		done()
		t.Fatalf("instance %s from %s: %v", id, ami, err)
	}
	if err := mc.WaitWorkerConnected(ctx, worker, 5*time.Minute); err != nil {
		diag := l.Diagnose(id)
		done()
		t.Fatalf("worker %s on %s: %v\n%s", worker, id, err, diag)
	}
	return mc, id, done
}

// RunResources lists what run created that still exists.
func RunResources(t testing.TB, c *ec2.Client, run string) []string {
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

// ScanArgv reads every process's argv on the host (the lab's instances are
// containers whose processes the host sees) until the returned function is
// called, and fails the test if one holds secret.
func ScanArgv(t testing.TB, secret string) func() {
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

// CPythonBuild is a CPython build on the lab master's CPython builder.
type CPythonBuild struct {
	Build master.Build
	Steps []master.Step
	// Output is the output of the steps that prove the worker's image:
	// build-dependencies (git, gcc, pkg-config, the headers) and
	// optional-modules (the imports).
	Output map[string]string
}

// Total is the build's duration, from its first step's start to its last
// step's end.
func (b CPythonBuild) Total() time.Duration {
	if len(b.Steps) == 0 {
		return 0
	}
	return time.Duration((b.Steps[len(b.Steps)-1].Completed - b.Steps[0].Started) * float64(time.Second)).Round(time.Second)
}

// Summary lists the steps and their times on one line.
func (b CPythonBuild) Summary() string {
	var parts []string
	for _, s := range b.Steps {
		parts = append(parts, fmt.Sprintf("%s %s", s.Name, s.Duration()))
	}
	return strings.Join(parts, ", ")
}

// BootAndBuildCPython launches an instance from ami the way buildbot
// would, waits for its worker, and runs a build on the master's CPython
// builder (the lab's CPython repository, configure, make, the short test
// run): it fails the test unless the build succeeds. The instance is
// terminated afterwards.
func (l *Lab) BootAndBuildCPython(t testing.TB, worker, ami string) CPythonBuild {
	t.Helper()
	ctx := context.Background()
	if l.State.CPythonGit == "" {
		t.Fatalf("the lab has no CPython repository (cpython_git is off)")
	}
	// t3.large: 2 vCPUs, as the workers' parallel_tests in the lab tests.
	mc, id, done := l.boot(t, "", worker, ami, types.InstanceTypeT3Large)
	defer done()
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.CPythonBuilderName, "CPython on "+ami)
	if err != nil {
		t.Fatalf("ForceBuild(%s): %v", master.CPythonBuilderName, err)
	}
	b, err := mc.WaitBuild(ctx, req, time.Hour)
	res := CPythonBuild{Build: b, Output: map[string]string{}}
	if err == nil {
		res.Steps, _ = mc.Steps(ctx, b.BuildID)
		for _, s := range []string{"build-dependencies", "optional-modules"} {
			res.Output[s], _ = mc.StepOutput(ctx, b.BuildID, s)
		}
	}
	if err != nil || !b.Succeeded() {
		var why strings.Builder
		for _, s := range res.Steps {
			if s.Results != nil && *s.Results != master.Success {
				o, _ := mc.StepOutput(ctx, b.BuildID, s.Name)
				fmt.Fprintf(&why, "--- step %s (%s), the end of its output:\n%s\n", s.Name, s.StateString, lastLines(o, 60))
			}
		}
		t.Fatalf("CPython build on %s: %+v, %v; want success (steps: %s)\n%s%s", ami, b, err, res.Summary(), why.String(), l.Diagnose(id))
	}
	return res
}
