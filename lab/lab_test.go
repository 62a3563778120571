package lab_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/labtest"
	"github.com/latentworker/latentworker/lab/machine"
)

// keyPair is a key pair imported into the lab.
type keyPair struct {
	name   string
	signer ssh.Signer
}

func importKey(t *testing.T, c *ec2.Client, name string) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	_, err = c.ImportKeyPair(context.Background(), &ec2.ImportKeyPairInput{
		KeyName: aws.String(name), PublicKeyMaterial: ssh.MarshalAuthorizedKey(sshPub),
	})
	if err != nil {
		t.Fatalf("ImportKeyPair: %v", err)
	}
	return keyPair{name: name, signer: signer}
}

// consoleHostKeys reads the host keys cloud-init prints on the console.
func consoleHostKeys(t *testing.T, c *ec2.Client, id string) []ssh.PublicKey {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
		if err != nil {
			t.Fatalf("GetConsoleOutput(%s): %v", id, err)
		}
		text, _ := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
		_, block, ok := strings.Cut(string(text), "-----BEGIN SSH HOST KEY KEYS-----\n")
		if ok {
			block, _, _ = strings.Cut(block, "-----END SSH HOST KEY KEYS-----")
			var keys []ssh.PublicKey
			for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
				k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
				if err != nil {
					t.Fatalf("console host key %q: %v", line, err)
				}
				keys = append(keys, k)
			}
			return keys
		}
		if time.Now().After(deadline) {
			t.Fatalf("no host key block in the console of %s:\n%s", id, text)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sshRun runs cmd on addr as user, accepting only the pinned host keys.
func sshRun(addr, user string, signer ssh.Signer, hostKeys []ssh.PublicKey, cmd string) (string, error) {
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			for _, k := range hostKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return nil
				}
			}
			return errors.New("host key not in the console's list")
		},
		Timeout: 5 * time.Second,
	}
	c, err := ssh.Dial("tcp", net.JoinHostPort(addr, "22"), cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return strings.TrimSpace(string(out)), err
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func newestDebian(t *testing.T, c *ec2.Client) types.Image {
	t.Helper()
	out, err := c.DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners:  []string{lab.DebianOwner},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-12-amd64-*"}}},
	})
	if err != nil {
		t.Fatalf("DescribeImages: %v", err)
	}
	if len(out.Images) < 2 {
		t.Fatalf("DescribeImages(debian-12-amd64-*) found %d images; want the catalogue's 2", len(out.Images))
	}
	sort.Slice(out.Images, func(i, j int) bool {
		return aws.ToString(out.Images[i].CreationDate) < aws.ToString(out.Images[j].CreationDate)
	})
	return out.Images[len(out.Images)-1]
}

// rebootChangesBootID reboots an instance with RebootInstances and waits
// for bootID (read over SSH) to change.
func rebootChangesBootID(t *testing.T, c *ec2.Client, id string, bootID func() (string, error)) {
	t.Helper()
	before, err := bootID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RebootInstances(context.Background(), &ec2.RebootInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("RebootInstances: %v", err)
	}
	eventually(t, 2*time.Minute, "new boot ID after reboot", func() error {
		after, err := bootID()
		if err != nil {
			return err
		}
		if after == before {
			return fmt.Errorf("boot ID still %s", after)
		}
		return nil
	})
}

type instance struct {
	id, addr string
	hostKeys []ssh.PublicKey
}

func launch(t *testing.T, c *ec2.Client, ami string, key keyPair, n int32) []instance {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small,
		KeyName: aws.String(key.name), MinCount: aws.Int32(n), MaxCount: aws.Int32(n),
	})
	if err != nil {
		t.Fatalf("RunInstances(%s): %v", ami, err)
	}
	// As EC2, the lab answers pending at once: host keys and the boot
	// come after the answer.
	if took := time.Since(start); took > time.Second {
		t.Errorf("RunInstances of %d took %s; want under 1s", n, took.Round(time.Millisecond))
	}
	var ids []string
	for _, in := range out.Instances {
		if in.State.Name != types.InstanceStateNamePending {
			t.Errorf("RunInstances: %s is %s; want pending", aws.ToString(in.InstanceId), in.State.Name)
		}
		ids = append(ids, aws.ToString(in.InstanceId))
	}
	if err := ec2.NewInstanceRunningWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 2*time.Minute); err != nil {
		t.Fatalf("waiting for %v to run: %v", ids, err)
	}
	d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	var res []instance
	for _, r := range d.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.PublicIpAddress) == "" || aws.ToString(in.PublicIpAddress) != aws.ToString(in.PrivateIpAddress) {
				t.Errorf("%s: public %q private %q; want the same loopback address", aws.ToString(in.InstanceId), aws.ToString(in.PublicIpAddress), aws.ToString(in.PrivateIpAddress))
			}
			res = append(res, instance{id: aws.ToString(in.InstanceId), addr: aws.ToString(in.PublicIpAddress)})
		}
	}
	for i := range res {
		res[i].hostKeys = consoleHostKeys(t, c, res[i].id)
	}
	return res
}

func terminate(t *testing.T, c *ec2.Client, ids ...string) {
	t.Helper()
	ctx := context.Background()
	out, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	for _, ch := range out.TerminatingInstances {
		if ch.CurrentState.Name != types.InstanceStateNameShuttingDown && ch.CurrentState.Name != types.InstanceStateNameTerminated {
			t.Errorf("TerminateInstances: %s is %s; want shutting-down", aws.ToString(ch.InstanceId), ch.CurrentState.Name)
		}
	}
	if err := ec2.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, time.Minute); err != nil {
		t.Fatalf("waiting for %v to terminate: %v", ids, err)
	}
}

// assertNoBody checks the host: no process and no mount of the instances.
func assertNoBody(t *testing.T, l *labtest.Lab, ids ...string) {
	t.Helper()
	for _, id := range ids {
		dir := filepath.Join(l.Options.StateDir, "i", id)
		if pids, _ := machine.ProcessesRootedIn(dir); len(pids) > 0 {
			t.Errorf("%s terminated but processes %v still run in it", id, pids)
		}
		if mps, _ := machine.MountsUnder(dir); len(mps) > 0 {
			t.Errorf("%s terminated but %v still mounted", id, mps)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s terminated but its directory %s is still there", id, dir)
		}
		if cgs, err := machine.CgroupsLeft(lab.MachineName(id)); err != nil || len(cgs) > 0 {
			t.Errorf("%s terminated but its cgroups %v are still there (%v)", id, cgs, err)
		}
	}
}

func TestLab(t *testing.T) {
	l := labtest.Start(t, "")
	c := l.EC2("")
	ctx := context.Background()
	key := importKey(t, c, "lab-test")
	base := newestDebian(t, c)
	if got, want := aws.ToString(base.Name), "debian-12-amd64-20261101-1234"; got != want {
		t.Fatalf("newest Debian 12 by filter = %s; want %s", got, want)
	}
	inst := launch(t, c, aws.ToString(base.ImageId), key, 1)[0]
	bootID := func() (string, error) {
		return sshRun(inst.addr, "admin", key.signer, inst.hostKeys, "cat /proc/sys/kernel/random/boot_id")
	}

	t.Run("ssh with the host key from the console", func(t *testing.T) {
		out, err := sshRun(inst.addr, "admin", key.signer, inst.hostKeys, "sudo -n id -u && systemctl is-system-running --wait")
		if err != nil {
			t.Fatalf("ssh: %v: %s", err, out)
		}
		if !strings.HasPrefix(out, "0\n") {
			t.Errorf("sudo id -u = %q; want 0 first", out)
		}
		// A key the console did not list is refused.
		other, _, _ := ed25519.GenerateKey(rand.Reader)
		bogus, _ := ssh.NewPublicKey(other)
		if _, err := sshRun(inst.addr, "admin", key.signer, []ssh.PublicKey{bogus}, "true"); err == nil {
			t.Error("ssh accepted a host key not printed on the console")
		}
	})

	t.Run("reboot changes the boot ID", func(t *testing.T) {
		rebootChangesBootID(t, c, inst.id, bootID)
	})

	t.Run("stop and start", func(t *testing.T) {
		before, err := bootID()
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{inst.id}})
		if err != nil {
			t.Fatalf("StopInstances: %v", err)
		}
		if got := out.StoppingInstances[0].CurrentState.Name; got != types.InstanceStateNameStopping {
			t.Errorf("StopInstances: current state %s; want stopping", got)
		}
		if err := ec2.NewInstanceStoppedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.id}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := bootID(); err == nil {
			t.Error("ssh answered while the instance is stopped")
		}
		sout, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{inst.id}})
		if err != nil {
			t.Fatalf("StartInstances: %v", err)
		}
		if got := sout.StartingInstances[0].CurrentState.Name; got != types.InstanceStateNamePending {
			t.Errorf("StartInstances: current state %s; want pending", got)
		}
		if err := ec2.NewInstanceRunningWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.id}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "ssh after start (same host keys)", func() error {
			after, err := bootID()
			if err == nil && after == before {
				return errors.New("boot ID unchanged after stop/start")
			}
			return err
		})
	})

	var newAMI string
	t.Run("an image keeps what was written and what was deleted", func(t *testing.T) {
		out, err := sshRun(inst.addr, "admin", key.signer, inst.hostKeys,
			"echo baked | sudo tee /root/marker >/dev/null && sudo rm /etc/issue.net")
		if err != nil {
			t.Fatalf("prepare: %v: %s", err, out)
		}
		if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{inst.id}}); err != nil {
			t.Fatal(err)
		}
		if err := ec2.NewInstanceStoppedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.id}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		img, err := c.CreateImage(ctx, &ec2.CreateImageInput{
			InstanceId: aws.String(inst.id), Name: aws.String("lab-test-" + time.Now().Format("20060102-150405")),
			TagSpecifications: []types.TagSpecification{
				{ResourceType: types.ResourceTypeImage, Tags: []types.Tag{{Key: aws.String("role"), Value: aws.String("image")}}},
				{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("role"), Value: aws.String("snapshot")}}},
			},
		})
		if err != nil {
			t.Fatalf("CreateImage with a snapshot tag specification: %v", err)
		}
		newAMI = aws.ToString(img.ImageId)
		d, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{newAMI}})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Images[0].State; got != types.ImageStatePending {
			t.Errorf("new image state %s; want pending first", got)
		}
		snap := aws.ToString(d.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
		s, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Snapshots[0].State; got != types.SnapshotStatePending {
			t.Errorf("snapshot of a pending image is %s (%s); want pending", got, aws.ToString(s.Snapshots[0].Progress))
		}
		if len(s.Snapshots[0].Tags) != 1 || aws.ToString(s.Snapshots[0].Tags[0].Value) != "snapshot" {
			t.Errorf("snapshot tags = %v; want role=snapshot", s.Snapshots[0].Tags)
		}
		if _, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(newAMI), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}); err == nil {
			t.Error("RunInstances from a pending image succeeded")
		}
		if err := ec2.NewImageAvailableWaiter(c).Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{newAMI}}, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		child := launch(t, c, newAMI, key, 1)[0]
		got, err := sshRun(child.addr, "admin", key.signer, child.hostKeys, "sudo cat /root/marker; test -e /etc/issue.net && echo issue-back || echo issue-gone")
		if err != nil {
			t.Fatalf("ssh to %s: %v: %s", child.id, err, got)
		}
		if got != "baked\nissue-gone" {
			t.Errorf("instance from the new image says %q; want the marker and no /etc/issue.net", got)
		}
		terminate(t, c, child.id)
		assertNoBody(t, l, child.id)

		// The imaged instance's disk is the image's layer under a new
		// one of its own: started again, it is the same machine (the
		// same host keys and name, what it wrote), and what it writes
		// now is not in the image.
		if _, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{inst.id}}); err != nil {
			t.Fatalf("StartInstances after CreateImage: %v", err)
		}
		if err := ec2.NewInstanceRunningWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.id}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "ssh to the imaged instance with its own host keys", func() error {
			got, err := sshRun(inst.addr, "admin", key.signer, inst.hostKeys, "sudo cat /root/marker; test -e /etc/issue.net && echo issue-back || echo issue-gone; test -s /etc/machine-id && echo has-id; sudo touch /root/after-image")
			if err == nil && got != "baked\nissue-gone\nhas-id" {
				return fmt.Errorf("the imaged instance says %q; want its marker, no /etc/issue.net and its machine ID", got)
			}
			return err
		})
		if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{inst.id}}); err != nil {
			t.Fatal(err)
		}
		if err := ec2.NewInstanceStoppedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst.id}}, time.Minute); err != nil {
			t.Fatal(err)
		}
		child = launch(t, c, newAMI, key, 1)[0]
		if got, err := sshRun(child.addr, "admin", key.signer, child.hostKeys, "sudo test -e /root/after-image && echo leaked || echo clean"); err != nil || got != "clean" {
			t.Errorf("what the imaged instance wrote afterwards, in a new instance of the image: %q (%v); want clean", got, err)
		}
		terminate(t, c, child.id)
		assertNoBody(t, l, child.id)
	})

	t.Run("calls moto cannot answer", func(t *testing.T) {
		if newAMI == "" {
			t.Skip("no image")
		}
		at := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Minute)
		if _, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(newAMI), DeprecateAt: aws.Time(at)}); err != nil {
			t.Fatalf("EnableImageDeprecation: %v", err)
		}
		if _, err := c.EnableImageDeregistrationProtection(ctx, &ec2.EnableImageDeregistrationProtectionInput{ImageId: aws.String(newAMI)}); err != nil {
			t.Fatalf("EnableImageDeregistrationProtection: %v", err)
		}
		d, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{newAMI}})
		if err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(d.Images[0].DeprecationTime); !strings.HasPrefix(got, at.Format("2006-01-02T15:04")) {
			t.Errorf("DeprecationTime = %q; want %s", got, at)
		}
		_, err = c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(newAMI)})
		var ae smithy.APIError
		if !errors.As(err, &ae) {
			t.Errorf("DeregisterImage of a protected image: %v; want an API error", err)
		}
		if _, err := c.DisableImageDeregistrationProtection(ctx, &ec2.DisableImageDeregistrationProtectionInput{ImageId: aws.String(newAMI)}); err != nil {
			t.Fatal(err)
		}
		lt, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String("launch-time"), Values: []string{time.Now().UTC().Format("2006") + "-*"}},
			{Name: aws.String("instance-state-name"), Values: []string{"stopped"}}, // imaged above
		}})
		if err != nil {
			t.Fatalf("DescribeInstances with a launch-time filter: %v", err)
		}
		if len(lt.Reservations) != 1 || aws.ToString(lt.Reservations[0].Instances[0].InstanceId) != inst.id {
			t.Errorf("launch-time + stopped filter found %d reservations; want just %s", len(lt.Reservations), inst.id)
		}
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(newAMI)}); err != nil {
			t.Fatalf("DeregisterImage: %v", err)
		}
	})

	t.Run("terminate leaves no container or mount", func(t *testing.T) {
		terminate(t, c, inst.id)
		assertNoBody(t, l, inst.id)
		if layers, _ := filepath.Glob(filepath.Join(l.Options.StateDir, "l", "*")); len(layers) != 0 {
			t.Errorf("layers %v left after the image was deregistered and its instances terminated", layers)
		}
	})

	t.Run("an image outlives its instance's termination", func(t *testing.T) {
		// As an EBS snapshot in progress does: CreateImage (which
		// stops the instance first) and at once TerminateInstances.
		src := launch(t, c, aws.ToString(base.ImageId), key, 1)[0]
		img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(src.id), Name: aws.String("lab-test-terminated-" + time.Now().Format("20060102-150405"))})
		if err != nil {
			t.Fatal(err)
		}
		terminate(t, c, src.id)
		if err := ec2.NewImageAvailableWaiter(c).Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}}, 2*time.Minute); err != nil {
			t.Fatalf("image %s of an instance terminated while it was captured: %v", aws.ToString(img.ImageId), err)
		}
		assertNoBody(t, l, src.id)
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("five instances at once", func(t *testing.T) {
		start := time.Now()
		insts := launch(t, c, aws.ToString(base.ImageId), key, 5)
		t.Logf("5 instances running with host keys on the console in %s", time.Since(start).Round(time.Millisecond))
		var wg sync.WaitGroup
		names := make([]string, len(insts))
		for i, in := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				eventually(t, 30*time.Second, "ssh to "+in.id, func() error {
					out, err := sshRun(in.addr, "admin", key.signer, in.hostKeys, "hostname")
					names[i] = out
					return err
				})
			}()
		}
		wg.Wait()
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				t.Errorf("two instances share hostname %q", n)
			}
			seen[n] = true
		}
		var ids []string
		for _, in := range insts {
			ids = append(ids, in.id)
		}
		terminate(t, c, ids...)
		assertNoBody(t, l, ids...)
	})
}

// TestDownAfterCrash kills the lab daemon with SIGKILL while an instance
// runs; `latentlab down` must still leave no process and no mount.
func TestDownAfterCrash(t *testing.T) {
	l := labtest.Start(t, "")
	c := l.EC2("")
	key := importKey(t, c, "crash")
	base := newestDebian(t, c)
	inst := launch(t, c, aws.ToString(base.ImageId), key, 1)[0]
	if err := syscall.Kill(l.State.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	out, err := exec(l, "down")
	if err != nil {
		t.Fatalf("latentlab down after a crash: %v\n%s", err, out)
	}
	for name, pid := range map[string]int{"moto": l.State.MotoPID, "master": l.State.MasterPID} {
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
				t.Errorf("%s (pid %d) still runs after down", name, pid)
			}
		}
	}
	if pids, _ := machine.ProcessesRootedIn(l.Options.StateDir); len(pids) > 0 {
		t.Errorf("container processes %v still run after down", pids)
	}
	if mps, _ := machine.MountsUnder(l.Options.StateDir); len(mps) > 0 {
		t.Errorf("%v still mounted after down", mps)
	}
	if _, err := os.Stat(filepath.Join("/run/systemd/nspawn/propagate", "lw-"+strings.TrimPrefix(inst.id, "i-"))); err == nil {
		t.Errorf("nspawn propagation directory of %s left", inst.id)
	}
}

func exec(l *labtest.Lab, args ...string) (string, error) {
	return l.Run(args...)
}
