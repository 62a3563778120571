package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/handoff"
	"github.com/latentworker/latentworker/lab/labtest"
	"github.com/latentworker/latentworker/lab/master"
)

// These tests run the real latentworker binary against a private lab, as a
// user would: config file, password file, AWS_ENDPOINT_URL from the lab.

const cliWorker = "lw-cli"

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func latentworkerBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "latentworker-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "latentworker")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type cliEnv struct {
	lab      *labtest.Lab
	bin      string
	dir      string
	config   string
	password string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	return newCLIEnvWith(t, "", "")
}

// newCLIEnvWith starts a lab whose file begins with labFile (top-level
// keys). With masterAddr "", the lab's own master accepts the worker and
// bake points the worker at it; otherwise the lab runs no master and the
// worker is baked for masterAddr (a master the test starts).
func newCLIEnvWith(t *testing.T, labFile, masterAddr string) *cliEnv {
	t.Helper()
	labtest.Require(t)
	e := &cliEnv{bin: latentworkerBin(t), dir: t.TempDir(), password: "cli-pw-" + fleet.NewRunID()}
	pw := filepath.Join(e.dir, "password")
	if err := os.WriteFile(pw, []byte(e.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if masterAddr == "" {
		e.lab = labtest.Start(t, labFile+fmt.Sprintf("[master]\n[[master.workers]]\nname = %q\npassword_file = %q\n", cliWorker, pw))
		masterAddr = e.lab.State.MasterPB
	} else {
		e.lab = labtest.Start(t, labFile+"[master]\nenabled = false\n")
	}
	e.config = filepath.Join(e.dir, "latentworker.toml")
	cfg := fmt.Sprintf(`[worker]
name = %q
master = %q
admin_name = "Lab Admin"
admin_email = "admin@example.com"
password_file = %q

[aws]
instance_type = "t3.small"

[image]
# A bare worker: these tests build no CPython (bake's TestBakeE2E does).
cpython_build_deps = false
`, cliWorker, masterAddr, pw)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *cliEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.bin, append([]string{"-c", e.config}, args...)...)
	cmd.Dir = e.dir
	cmd.Env = append(e.lab.Environ(), "LATENTWORKER_PASSWORD=")
	return cmd
}

// sweep runs latentworker sweep on the lab's region, without the config
// file (as from cron), and returns its stdout, stderr and exit code.
func (e *cliEnv) sweep(ctx context.Context, args ...string) (string, string, int) {
	cmd := exec.CommandContext(ctx, e.bin, append([]string{"sweep", "--region", "us-east-1"}, args...)...)
	cmd.Env = e.lab.Environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// events parses --json output.
func events(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("--json line %q: %v", sc.Text(), err)
		}
		evs = append(evs, m)
	}
	return evs
}

func (e *cliEnv) noSecret(t *testing.T, what string, b []byte) {
	t.Helper()
	if bytes.Contains(b, []byte(e.password)) {
		t.Errorf("%s holds the worker password", what)
	}
}

// launchWithAWSCLI boots ami with the AWS CLI, as an admin would, and checks
// that the worker connects to the lab's master and runs a build.
func (e *cliEnv) launchWithAWSCLI(t *testing.T, ami string) {
	t.Helper()
	ctx := context.Background()
	aws := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "aws", append([]string{"ec2"}, args...)...)
		cmd.Env = e.lab.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws ec2 %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	mc := &master.Client{BaseURL: e.lab.State.MasterURL}
	// The bake's verify instance must be gone from the master first: its
	// stale connection would pass for this instance's (BootAndBuild).
	if err := mc.WaitWorkerDisconnected(ctx, cliWorker, 2*time.Minute); err != nil {
		t.Fatalf("before booting %s: %v", ami, err)
	}
	id := aws("run-instances", "--image-id", ami, "--instance-type", "t3.small", "--query", "Instances[0].InstanceId", "--output", "text")
	defer func() {
		aws("terminate-instances", "--instance-ids", id, "--output", "text")
		aws("wait", "instance-terminated", "--instance-ids", id)
	}()
	aws("wait", "instance-running", "--instance-ids", id)
	if err := mc.WaitWorkerConnected(ctx, cliWorker, 5*time.Minute); err != nil {
		t.Fatalf("worker %s on %s from %s: %v\n%s", cliWorker, id, ami, err, e.lab.Diagnose(id))
	}
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "latentworker cli e2e")
	if err != nil {
		t.Fatalf("ForceBuild: %v", err)
	}
	b, err := mc.WaitBuild(ctx, req, 3*time.Minute)
	if err != nil || !b.Succeeded() {
		t.Fatalf("build on an instance of %s: %+v, %v; want success\n%s", ami, b, err, e.lab.Diagnose(id))
	}
	aws("terminate-instances", "--instance-ids", id, "--output", "text")
	aws("wait", "instance-terminated", "--instance-ids", id)
	_ = mc.WaitWorkerDisconnected(ctx, cliWorker, time.Minute)
}

// TestBakeCLI bakes with the command line as the README shows, launches the
// AMI with the AWS CLI, sees the worker connect and build, then refreshes
// with --from-previous and does it again.
func TestBakeCLI(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	stopScan := labtest.ScanArgv(t, e.password)
	cmd := e.command(ctx, "bake", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	stopScan()
	e.noSecret(t, "stdout", out)
	e.noSecret(t, "stderr", stderr.Bytes())
	if err != nil {
		t.Fatalf("latentworker bake --json: %v\n%s\n%s", err, out, stderr.String())
	}
	evs := events(t, out)
	last := evs[len(evs)-1]
	ami, _ := last["image_id"].(string)
	if last["type"] != "result" || !strings.HasPrefix(ami, "ami-") {
		t.Fatalf("last --json event = %v; want a result with an image_id", last)
	}
	started := map[string]bool{}
	for _, ev := range evs {
		if ev["type"] == string(bake.EventStepStarted) {
			started[ev["step"].(string)] = true
		}
	}
	for _, s := range bake.Steps() {
		if !started[s.Name] {
			t.Errorf("no step_started event for %s", s.Name)
		}
	}
	manifest, err := os.ReadFile(last["manifest"].(string))
	if err != nil {
		t.Fatal(err)
	}
	e.noSecret(t, "the manifest", manifest)
	e.launchWithAWSCLI(t, ami)

	t.Run("from previous", func(t *testing.T) {
		cmd := e.command(ctx, "bake", "--from-previous", "--terminate-builder")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		e.noSecret(t, "stdout", out)
		e.noSecret(t, "stderr", stderr.Bytes())
		if err != nil {
			t.Fatalf("latentworker bake --from-previous: %v\n%s", err, stderr.String())
		}
		fields := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, ": ")
			fields[k] = v
		}
		if fields["replaces"] != ami || !strings.HasPrefix(fields["image_id"], "ami-") || fields["region"] == "" || fields["manifest"] == "" {
			t.Fatalf("stdout = %q; want image_id, region, manifest and replaces: %s", out, ami)
		}
		if !strings.Contains(stderr.String(), "wait-image") {
			t.Errorf("stderr shows no progress:\n%s", stderr.String())
		}
		e.launchWithAWSCLI(t, fields["image_id"])
	})

	if b, err := os.ReadFile(e.lab.State.RequestLog); err != nil {
		t.Error(err)
	} else {
		e.noSecret(t, "the lab's request log", b)
	}
}

// TestBakeInterrupted sends SIGINT, and separately SIGTERM, to bake as each
// step starts, and checks that the run exits 130 and leaves nothing tagged
// with its run ID: no instance, key pair, security group, image or snapshot;
// but for an image already verified (a step after verify-image), which is
// kept with its snapshots, and the message names the resume that finishes
// the run.
func TestBakeInterrupted(t *testing.T) {
	e := newCLIEnv(t)
	c := e.lab.EC2("")
	verified := false // the step runs after verify-image
	for _, step := range bake.Steps() {
		afterVerify := verified
		if step.Name == bake.StepVerifyImage {
			verified = true
		}
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
			t.Run(step.Name+"/"+sig.String(), func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				args := []string{"bake", "--json"}
				// The manifest step takes a millisecond: a signal sent as
				// it starts would land after the run. A FIFO as the
				// manifest holds the step until the signal has landed.
				var fifo string
				if step.Name == bake.StepManifest {
					fifo = filepath.Join(t.TempDir(), "manifest.fifo")
					if err := syscall.Mkfifo(fifo, 0o600); err != nil {
						t.Fatal(err)
					}
					args = append(args, "--manifest", fifo)
				}
				cmd := e.command(ctx, args...)
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				var all bytes.Buffer
				sent := false
				sc := bufio.NewScanner(stdout)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					all.Write(sc.Bytes())
					all.WriteByte('\n')
					var ev map[string]any
					if json.Unmarshal(sc.Bytes(), &ev) == nil && !sent &&
						ev["type"] == string(bake.EventStepStarted) && ev["step"] == step.Name {
						if err := cmd.Process.Signal(sig); err != nil {
							t.Fatal(err)
						}
						sent = true
						if fifo != "" {
							go func() {
								// Let the signal be handled, then let the write go.
								time.Sleep(500 * time.Millisecond)
								if f, err := os.Open(fifo); err == nil {
									_, _ = io.Copy(io.Discard, f)
									f.Close()
								}
							}()
						}
					}
				}
				err = cmd.Wait()
				e.noSecret(t, "stdout", all.Bytes())
				e.noSecret(t, "stderr", stderr.Bytes())
				if !sent {
					t.Fatalf("step %s never started:\n%s\n%s", step.Name, all.String(), stderr.String())
				}
				if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
					t.Fatalf("bake interrupted at %s exited %d (%v); want %d\n%s", step.Name, code, err, exitInterrupted, stderr.String())
				}
				evs := events(t, all.Bytes())
				last := evs[len(evs)-1]
				run, _ := last["run_id"].(string)
				if last["type"] != "error" || run == "" {
					t.Fatalf("last event = %v; want an error naming the run", last)
				}
				left := labtest.RunResources(t, c, run)
				if afterVerify {
					images := 0
					var other []string
					for _, l := range left {
						switch {
						case strings.HasPrefix(l, "image "):
							images++
						case !strings.HasPrefix(l, "snapshot "):
							other = append(other, l)
						}
					}
					if images != 1 || len(other) > 0 {
						t.Errorf("interrupted at %s with %v (after verify-image), run %s left %v; want the verified image and its snapshots only\n%s", step.Name, sig, run, left, stderr.String())
					}
					if resume := "latentworker bake --resume " + run; !strings.Contains(stderr.String(), resume) {
						t.Errorf("interrupted at %s with %v: stderr does not name %q\n%s", step.Name, sig, resume, stderr.String())
					}
					if last["image_kept"] != true || last["resume"] == nil {
						t.Errorf("interrupted at %s with %v: last event = %v; want image_kept and resume", step.Name, sig, last)
					}
					return
				}
				if len(left) > 0 {
					t.Errorf("interrupted at %s with %v, run %s left %v\n%s", step.Name, sig, run, left, stderr.String())
				}
			})
		}
	}
}

// TestValidateAgainstLab runs validate against the lab's AWS: the newest
// Debian AMI by filter passes; a too small instance type, an AMI of the
// wrong architecture and a KMS key that is missing, disabled, asymmetric or
// without its alias in a copy's region are bad input naming the field,
// before anything is made.
func TestValidateAgainstLab(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	out, err := e.command(ctx, "validate").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "base_image: ami-") || !strings.Contains(string(out), "debian-12-amd64-20261101-1234") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	// The lab's own identity (moto's) cannot be simulated: said, and
	// validation goes on.
	if !strings.Contains(string(out), "permissions: not checked") || !strings.Contains(string(out), "subnet: subnet-") {
		t.Errorf("validate as the lab's identity: want the subnet and \"permissions: not checked\":\n%s", out)
	}
	t.Run("the caller's permissions, simulated", func(t *testing.T) {
		ic := iam.NewFromConfig(e.lab.AWS)
		const user = "lw-validate-denied"
		policy := `{"Version": "2012-10-17", "Statement": [
  {"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"},
  {"Sid": "NoLaunches", "Effect": "Deny", "Action": "ec2:RunInstances", "Resource": "*"}
]}`
		if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(user)}); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(user), PolicyName: aws.String("baker"), PolicyDocument: aws.String(policy)}); err != nil {
			t.Fatal(err)
		}
		k, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(user)})
		if err != nil {
			t.Fatal(err)
		}
		cmd := e.command(ctx, "validate")
		cmd.Env = append(cmd.Env, "AWS_ACCESS_KEY_ID="+aws.ToString(k.AccessKey.AccessKeyId), "AWS_SECRET_ACCESS_KEY="+aws.ToString(k.AccessKey.SecretAccessKey))
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != exitBadInput || !strings.Contains(string(out), "ec2:RunInstances") ||
			!strings.Contains(string(out), "explicitDeny by policy user/baker (the statement at line 3") || strings.Contains(string(out), "ec2:DescribeImages") {
			t.Errorf("validate as a user denied RunInstances = exit %d (%v):\n%s\nwant exit %d naming ec2:RunInstances and the statement (policy user/baker, line 3), and no other action", code, err, out, exitBadInput)
		}
	})
	// The instance type is offered in some zones only: a subnet in
	// another is bad input (moto's us-east-1e offers no t3).
	subs, err := e.lab.EC2("").DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"us-east-1e"}}}})
	if err != nil || len(subs.Subnets) == 0 {
		t.Fatalf("the subnet of us-east-1e: %v, %v", subs, err)
	}
	if cmd := e.command(ctx, "validate", "--subnet-id", aws.ToString(subs.Subnets[0].SubnetId), "--instance-type", "t3.small"); true {
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != exitBadInput || !strings.Contains(string(out), "us-east-1e") || !strings.Contains(string(out), "aws.instance_type") {
			t.Errorf("validate with a subnet whose zone does not offer the type = exit %d (%v):\n%s\nwant exit %d naming aws.instance_type and us-east-1e", code, err, out, exitBadInput)
		}
	}
	k := kms.NewFromConfig(e.lab.AWS)
	key := func(in *kms.CreateKeyInput, disable bool) string {
		out, err := k.CreateKey(ctx, in)
		if err == nil && disable {
			_, err = k.DisableKey(ctx, &kms.DisableKeyInput{KeyId: out.KeyMetadata.KeyId})
		}
		if err != nil {
			t.Fatalf("kms: %v", err)
		}
		return aws.ToString(out.KeyMetadata.Arn)
	}
	good := key(&kms.CreateKeyInput{}, false)
	if _, err := k.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/lw-validate"), TargetKeyId: aws.String(good)}); err != nil {
		t.Fatal(err)
	}
	disabled := key(&kms.CreateKeyInput{}, true)
	signing := key(&kms.CreateKeyInput{KeySpec: kmstypes.KeySpecEccNistP256, KeyUsage: kmstypes.KeyUsageTypeSignVerify}, false)
	if out, err := e.command(ctx, "validate", "--kms-key-id", "alias/lw-validate").CombinedOutput(); err != nil {
		t.Errorf("validate with an enabled key's alias: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		args  []string
		field string
	}{
		{[]string{"--instance-type", "t2.micro"}, "aws.instance_type"},
		{[]string{"--base-ami", "ami-0d4f6b8a2c1e90573"}, "aws.instance_type"}, // arm64 in the lab's catalogue
		{[]string{"--base-name", "debian-99-*"}, "image.base_name"},
		{[]string{"--kms-key-id", "alias/lw-no-such-key"}, "image.kms_key_id"},
		{[]string{"--kms-key-id", disabled}, "image.kms_key_id"},
		{[]string{"--kms-key-id", signing}, "image.kms_key_id"},
		{[]string{"--kms-key-id", "alias/lw-validate", "--copy-to-region", "us-west-2"}, "image.kms_key_id"}, // no such alias there
	} {
		cmd := e.command(ctx, append([]string{"validate"}, tt.args...)...)
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != exitBadInput || !strings.Contains(string(out), tt.field) {
			t.Errorf("validate %v = exit %d (%v):\n%s\nwant exit %d naming %s", tt.args, code, err, out, exitBadInput, tt.field)
		}
	}
	c := e.lab.EC2("")
	kp, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(kp.KeyPairs) > 0 {
		t.Errorf("after validate: key pairs %v (%v); want none", kp, err)
	}
	in, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || len(in.Reservations) > 0 {
		t.Errorf("after validate: reservations %v (%v); want none", in, err)
	}
}

// TestBakeKeepOnFailure fails a bake in an extra script with
// --keep-on-failure --debug-key: the builder stays, the owner's key logs in,
// and everything else of the run is removed. First, in the same lab, a
// package the release does not have (with CPython's build dependencies):
// the bake fails naming it, before installing any of them, and removes
// everything it made.
func TestBakeKeepOnFailure(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	t.Run("a package the release lacks", func(t *testing.T) {
		const missing = "latentworker-no-such-package"
		cmd := e.command(ctx, "bake", "--json", "--cpython-build-deps=true", "--extra-package", missing)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		e.noSecret(t, "output", append(out, stderr.Bytes()...))
		if code := cmd.ProcessState.ExitCode(); code != exitFailure {
			t.Fatalf("bake with package %s = exit %d (%v); want %d\n%s\n%s", missing, code, err, exitFailure, out, stderr.String())
		}
		run, msg := "", ""
		for _, ev := range events(t, out) {
			switch ev["type"] {
			case "run":
				run, _ = ev["run_id"].(string)
			case "error":
				msg, _ = ev["error"].(string)
			}
		}
		if !strings.Contains(msg, "no such package in this release's repositories: "+missing) {
			t.Errorf("the error event %q does not name the missing package %s", msg, missing)
		}
		if strings.Contains(string(out), "latentworker: installing: git ") {
			t.Errorf("the build dependencies were installed before the missing name was found")
		}
		if left := labtest.RunResources(t, e.lab.EC2(""), run); run == "" || len(left) > 0 {
			t.Errorf("run %q left %v; want nothing", run, left)
		}
		t.Logf("the error: %s", msg)
	})
	script := filepath.Join(e.dir, "fail.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'extra script: failing on purpose' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(e.dir, "debug")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	cmd := e.command(ctx, "bake", "--extra-script", script, "--keep-on-failure", "--debug-key", key+".pub")
	out, err := cmd.CombinedOutput()
	e.noSecret(t, "output", out)
	if code := cmd.ProcessState.ExitCode(); code != exitFailure {
		t.Fatalf("bake with a failing extra script = exit %d (%v); want %d\n%s", code, err, exitFailure, out)
	}
	var addr, id string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "latentworker: kept builder ") {
			f := strings.Fields(line)
			id, addr = f[3], strings.TrimSuffix(f[5], ";")
		}
	}
	if id == "" || !strings.Contains(string(out), "log in with: ssh") {
		t.Fatalf("no kept builder with login instructions in:\n%s", out)
	}
	login := exec.Command("ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "admin@"+addr, "systemctl is-enabled buildbot-worker@"+cliWorker)
	if lout, err := login.CombinedOutput(); err != nil || strings.TrimSpace(string(lout)) != "enabled" {
		t.Errorf("ssh with the debug key to the kept builder %s: %v: %s", id, err, lout)
	}
	c := e.lab.EC2("")
	kp, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(kp.KeyPairs) > 0 {
		t.Errorf("key pairs after the failed run: %v (%v); want none", kp.KeyPairs, err)
	}
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Errorf("terminate the kept builder: %v", err)
	}
}

// TestHandoffCLI hands off a baked AMI in the lab: the secret reaches only
// the 0600 file (and stdout only with --show-secret), a refresh reports the
// one value that changed, and the two key slots are managed.
func TestHandoffCLI(t *testing.T) {
	// IAM as AWS's: a new instance profile and a new access key are not
	// known to EC2 for a while. Every handoff that makes them checks the
	// launch with them: it waits them out (before, the profile's
	// InvalidParameterValue failed the check).
	e := newCLIEnvWith(t, "[realism]\niam_profile_delay = \"8s\"\niam_key_delay = \"8s\"\n", "")
	ctx := context.Background()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := e.command(ctx, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		_ = cmd.Run()
		e.noSecret(t, "handoff stdout", stdout.Bytes())
		e.noSecret(t, "handoff stderr", stderr.Bytes())
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}
	bakeOut, stderr, code := run("bake", "--no-verify", "--terminate-builder")
	if code != 0 {
		t.Fatalf("bake: exit %d\n%s", code, stderr)
	}
	ami := strings.TrimPrefix(strings.SplitN(bakeOut, "\n", 2)[0], "image_id: ")
	pub := filepath.Join(e.dir, "master-key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", pub).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if _, stderr, code := run("handoff"); code != exitFailure || !strings.Contains(stderr, "--public-key") {
		t.Errorf("handoff without the key pair or --public-key = exit %d\n%s\nwant a failure asking for --public-key", code, stderr)
	}
	out, stderr, code := run("handoff", "--public-key", pub+".pub")
	if code != 0 {
		t.Fatalf("handoff: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"t3.small", "us-east-1", ami, "Access key ID", "EC2LatentWorker(", "keepalive_interval=60"} {
		if !strings.Contains(out, want) {
			t.Errorf("handoff text lacks %q:\n%s", want, out)
		}
	}
	secretFiles, _ := filepath.Glob(filepath.Join(e.dir, cliWorker+"-*.secret"))
	if len(secretFiles) != 1 {
		t.Fatalf("secret files %v; want one", secretFiles)
	}
	fi, err := os.Stat(secretFiles[0])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %s: %v, mode %v; want 0600", secretFiles[0], err, fi.Mode())
	}
	full, _ := os.ReadFile(secretFiles[0])
	m := regexp.MustCompile(`"secret_access_key": "([^"]+)"`).FindSubmatch(full)
	if m == nil {
		t.Fatalf("no secret in %s", secretFiles[0])
	}
	secret := string(m[1])
	if strings.Contains(out, secret) || strings.Contains(stderr, secret) {
		t.Errorf("the secret access key reached the terminal without --show-secret")
	}
	if b, _ := os.ReadFile(e.lab.State.RequestLog); bytes.Contains(b, []byte(secret)) {
		t.Errorf("the secret access key is in the lab's request log")
	}
	// The order the admins need: the four items, the private settings
	// (only in the 0600 file, password included), the worker class
	// change, the snippet for other masters.
	last := -1
	for _, sec := range []string{"1. Instance size:", handoff.SectionSettings, handoff.SectionWorkerClass, handoff.SectionSnippet} {
		i := strings.Index(out, sec)
		if i <= last {
			t.Errorf("handoff's output: %q at %d, after %d; want the sections in order:\n%s", sec, i, last, out)
		}
		last = i
	}
	settings := handoff.Section(string(full), handoff.SectionSettings)
	if !strings.Contains(settings, `password: "`+e.password+`"`) || !strings.Contains(settings, `secret_access_key: "`+secret+`"`) {
		t.Errorf("the secret file's settings lack the worker password or the secret access key")
	}
	if _, stderr, code := run("handoff", "--format", "settings"); code != exitBadInput || !strings.Contains(stderr, "--show-secret") {
		t.Errorf("handoff --format settings without --show-secret = exit %d\n%s\nwant %d asking for --show-secret", code, stderr, exitBadInput)
	}

	// A refresh: the admins swap one value; the key stays.
	if _, stderr, code := run("bake", "--from-previous", "--no-verify", "--terminate-builder"); code != 0 {
		t.Fatalf("bake --from-previous: exit %d\n%s", code, stderr)
	}
	_, stderr, code = run("handoff")
	if code != 0 || !strings.Contains(stderr, "AMI "+ami+" -> ") || !strings.Contains(stderr, "unchanged") {
		t.Errorf("handoff after a refresh: exit %d\n%s\nwant the AMI change and the key unchanged", code, stderr)
	}
	// Key slots: rotate once, a second rotation is refused, retire the old.
	if _, stderr, code := run("handoff", "--rotate"); code != 0 {
		t.Errorf("handoff --rotate: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := run("handoff", "--rotate"); code == 0 || !strings.Contains(stderr, "2 access keys") {
		t.Errorf("a second --rotate: exit %d\n%s\nwant a refusal naming the two keys", code, stderr)
	}
	if _, stderr, code := run("handoff", "--retire-old"); code != 0 || !strings.Contains(stderr, "deleted the older access key") {
		t.Errorf("handoff --retire-old: exit %d\n%s", code, stderr)
	}
}

// endLease moves the lease on run's key pair into the past, as the lease
// of a killed run ends when nobody renews it (10 minutes later).
func endLease(t *testing.T, c *ec2.Client, run string) {
	t.Helper()
	ctx := context.Background()
	out, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []types.Filter{fleet.RunFilter(run)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, kp := range out.KeyPairs {
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(kp.KeyPairId)},
			Tags: []types.Tag{{Key: aws.String(fleet.TagLease), Value: aws.String(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSweepAfterKilledBake kills bake with SIGKILL as each step starts (no
// cleanup can run). A sweep then leaves the run alone while its lease is
// live; once the lease has ended, sweep reports what the run left (exit 1),
// removes it all with --terminate --yes (exit 3), and is silent afterwards
// (exit 0).
func TestSweepAfterKilledBake(t *testing.T) {
	e := newCLIEnv(t)
	c := e.lab.EC2("")
	ctx := context.Background()
	sweep := func(args ...string) (string, string, int) {
		return e.sweep(ctx, append([]string{"--max-age", "1s"}, args...)...)
	}
	verified := false                       // the step runs after verify-image
	for _, step := range bake.Steps()[1:] { // preflight creates nothing
		afterVerify := verified
		if step.Name == bake.StepVerifyImage {
			verified = true
		}
		t.Run(step.Name, func(t *testing.T) {
			args := []string{"bake", "--json"}
			if step.Name == bake.StepManifest {
				// The manifest step takes a millisecond, and the run's
				// cleanup follows: a FIFO nobody reads holds the step
				// until the kill lands.
				fifo := filepath.Join(t.TempDir(), "manifest.fifo")
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--manifest", fifo)
			}
			cmd := e.command(ctx, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var run string
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var ev map[string]any
				if json.Unmarshal(sc.Bytes(), &ev) != nil {
					continue
				}
				if ev["type"] == "run" {
					run, _ = ev["run_id"].(string)
				}
				if ev["type"] == string(bake.EventStepStarted) && ev["step"] == step.Name {
					_ = cmd.Process.Kill()
					break
				}
			}
			_ = cmd.Wait()
			if run == "" {
				t.Fatalf("killed at %s: no run event", step.Name)
			}
			left := labtest.RunResources(t, c, run)
			if len(left) == 0 {
				// Killed before it made anything (the key is its first).
				if out, stderr, code := sweep(); code != 0 || out != "" {
					t.Errorf("sweep after a bake killed before creating anything = exit %d\n%s\n%s", code, out, stderr)
				}
				return
			}
			time.Sleep(1100 * time.Millisecond) // older than --max-age
			// The killed run's lease is still live: to a sweep it is a run
			// in progress, and nothing of it is touched, whatever
			// --max-age.
			if out, stderr, code := sweep(); strings.Contains(out, run) || code == 3 {
				t.Errorf("sweep while the killed run's lease is live = exit %d; want nothing of run %s\n%s\n%s", code, run, out, stderr)
			}
			endLease(t, c, run)
			out, stderr, code := sweep()
			if code != 1 {
				t.Fatalf("sweep after a bake killed at %s = exit %d; want 1\n%s\n%s", step.Name, code, out, stderr)
			}
			// A verified image (killed after verify-image) is never a
			// leftover: bake --resume finishes its run, and only image
			// retention (--prune-images) removes it.
			var kept []string
			for _, l := range left {
				id := strings.Fields(l)[1]
				if afterVerify && (strings.HasPrefix(l, "image ") || strings.HasPrefix(l, "snapshot ")) {
					kept = append(kept, l)
					if strings.Contains(out, id) {
						t.Errorf("sweep report names the verified run's %s (%s):\n%s", id, l, out)
					}
					continue
				}
				if !strings.Contains(out, id) {
					t.Errorf("sweep report lacks %s (%s):\n%s", id, l, out)
				}
			}
			if afterVerify && len(kept) == 0 {
				t.Errorf("killed at %s (after verify-image): run %s left no image: %v", step.Name, run, left)
			}
			if _, stderr, code := sweep("--terminate", "--yes"); code != 3 {
				t.Fatalf("sweep --terminate --yes = exit %d; want 3\n%s", code, stderr)
			}
			if left := labtest.RunResources(t, c, run); !slices.Equal(left, kept) {
				t.Errorf("after sweep --terminate, run %s has %v; want %v", run, left, kept)
			}
			if out, stderr, code := sweep(); code != 0 || out != "" || stderr != "" {
				t.Errorf("a second sweep = exit %d, stdout %q, stderr %q; want 0 and silence", code, out, stderr)
			}
		})
	}
}
