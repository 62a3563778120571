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
	c := l.EC2(region)
	t.Helper()
	ctx := context.Background()
	mc := &master.Client{BaseURL: l.State.MasterURL}
	// An earlier instance of the worker (a bake's verify instance, the last
	// boot) must be gone from the master first: its stale connection would
	// pass for this instance's, and the new one be refused.
	if err := mc.WaitWorkerDisconnected(ctx, worker, 2*time.Minute); err != nil {
		t.Fatalf("before booting %s: %v", ami, err)
	}
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		t.Fatalf("RunInstances(%s): %v", ami, err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	defer func() {
		if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Errorf("TerminateInstances(%s): %v", id, err)
		}
		_ = ec2.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
	}()
	if err := ec2.NewInstanceRunningWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 3*time.Minute); err != nil {
		t.Fatalf("instance %s from %s: %v", id, ami, err)
	}
	if err := mc.WaitWorkerConnected(ctx, worker, 5*time.Minute); err != nil {
		t.Fatalf("worker %s on %s: %v\n%s", worker, id, err, l.Diagnose(id))
	}
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "bake e2e")
	if err != nil {
		t.Fatalf("ForceBuild: %v", err)
	}
	build, err := mc.WaitBuild(ctx, req, 3*time.Minute)
	if err != nil || !build.Succeeded() {
		t.Fatalf("build on %s: %+v, %v; want success\n%s", ami, build, err, l.Diagnose(id))
	}
	// Wait for the worker to go away before the next boot uses its name.
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Errorf("TerminateInstances(%s): %v", id, err)
	}
	_ = ec2.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute)
	_ = mc.WaitWorkerDisconnected(ctx, worker, time.Minute)
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
