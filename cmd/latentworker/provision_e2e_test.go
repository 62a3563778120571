package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/lab/labtest"
	"github.com/latentworker/latentworker/lab/master"
)

// TestProvisionHost: latentworker provision on a plain lab instance,
// launched as anybody would (no tag of this tool), its host key checked
// against a known_hosts file that lists only its Ed25519 key, as
// `ssh-keyscan -t ed25519` writes it: the worker connects to a real master.
// Then the master changes the worker's password, and a second provision
// with the new password, the host key given as its Ed25519 fingerprint
// (--host-key), makes the worker reconnect with it. (Before, both failed
// with a host key mismatch: the client asked for the ECDSA key.)
func TestProvisionHost(t *testing.T) {
	labtest.Require(t)
	l := labtest.Start(t, "[master]\nenabled = false\n")
	bin := latentworkerBin(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := l.EC2("")

	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("provision-e2e"), KeyType: types.KeyTypeEd25519})
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(aws.ToString(kp.KeyMaterial)), 0o600); err != nil {
		t.Fatal(err)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0c9e2f4d1a6b73852"), InstanceType: types.InstanceTypeT3Small,
		KeyName: aws.String("provision-e2e"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	t.Cleanup(func() {
		_, _ = c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	})
	out, err := ec2.NewInstanceRunningWaiter(c).WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ip := aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress)
	kh := filepath.Join(dir, "known_hosts")
	scan, err := exec.CommandContext(ctx, "ssh-keyscan", "-T", "10", "-t", "ed25519", ip).Output()
	if err != nil || len(scan) == 0 {
		t.Fatalf("ssh-keyscan -t ed25519 %s: %v", ip, err)
	}
	if err := os.WriteFile(kh, scan, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, hostKey, _, _, err := ssh.ParseKnownHosts(scan)
	if err != nil || hostKey.Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("ssh-keyscan -t ed25519 %s: %q: %v", ip, scan, err)
	}
	fingerprint := ssh.FingerprintSHA256(hostKey)

	const worker = "provision-e2e"
	masters := 0
	startMaster := func(pw string) *master.Master {
		masters++
		m, err := master.Start(ctx, master.Config{Dir: filepath.Join(dir, fmt.Sprintf("master-%d", masters)), Workers: []master.Worker{{Name: worker, Password: pw}}})
		if err != nil {
			t.Fatalf("master: %v", err)
		}
		t.Cleanup(func() { _ = m.Stop(context.Background()) })
		return m
	}
	provisionWith := func(m *master.Master, pw string, hostKeyArgs ...string) {
		t.Helper()
		cfg := filepath.Join(dir, "lw.toml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[worker]\nname = %q\nmaster = %q\nadmin_name = \"Host Admin\"\nadmin_email = \"host@example.org\"\n[image]\ncpython_build_deps = false\n", worker, m.PBAddr())), 0o600); err != nil {
			t.Fatal(err)
		}
		stop := labtest.ScanArgv(t, pw)
		cmd := exec.CommandContext(ctx, bin, append(append([]string{"provision", "-c", cfg, "--ssh-key", key}, hostKeyArgs...), "admin@"+ip)...)
		cmd.Env = append(os.Environ(), "LATENTWORKER_PASSWORD="+pw)
		b, err := cmd.CombinedOutput()
		stop()
		if err != nil {
			t.Fatalf("latentworker provision: %v\n%s", err, b)
		}
		if strings.Contains(string(b), pw) {
			t.Errorf("provision's output shows the password")
		}
		if err := m.Client().WaitWorkerConnected(ctx, worker, 2*time.Minute); err != nil {
			t.Fatalf("after provision, worker %s: %v\n%s", worker, err, b)
		}
	}
	m1 := startMaster("first-pw")
	provisionWith(m1, "first-pw", "--known-hosts", kh)
	if err := m1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The admins change the password (a new master with the same address
	// would do; here the worker follows the new master's address too).
	m2 := startMaster("second-pw")
	provisionWith(m2, "second-pw", "--host-key", fingerprint)

	// A host key that is not the one listed is refused before anything runs.
	bad := filepath.Join(dir, "bad_known_hosts")
	if err := os.WriteFile(bad, []byte(ip+" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINhQ3llHUYiRm7zq7HnQVjvopgMF5x2hEugitmx+B6om\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "provision", "-c", filepath.Join(dir, "lw.toml"), "--ssh-key", key, "--known-hosts", bad, "admin@"+ip)
	cmd.Env = append(os.Environ(), "LATENTWORKER_PASSWORD=second-pw")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "host key mismatch") {
		t.Errorf("provision with a wrong known_hosts: %v\n%s; want a host key mismatch", err, b)
	}
}
