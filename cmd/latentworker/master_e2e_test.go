package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/latentworker/latentworker/handoff"
	"github.com/latentworker/latentworker/iam"
	"github.com/latentworker/latentworker/lab/master"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
	"golang.org/x/crypto/ssh"
)

// TestHandedOffMaster is the handoff proved end to end: a lab with moto's
// IAM enforcement on, a bake, a handoff, and a real buildbot master
// configured with the handoff's snippet as pasted (the lab adds only the
// boto3 endpoint and the secret files the snippet names). A forced build
// makes the master launch the baked AMI with the handed-off key; the worker
// connects, the build succeeds, and after build_wait_timeout the master
// terminates the instance. Every call the master made was allowed, and
// calls outside the policy are denied to that key.
//
// Then the zombie the guide warns of: the master launches another instance
// and is killed with SIGKILL, so nobody terminates it; sweep reports it
// (exit 1), terminates it (exit 3), and is silent afterwards (exit 0).
func TestHandedOffMaster(t *testing.T) {
	pb := freeLoopbackPort(t)
	e := newCLIEnvWith(t, "iam_enforcement = true\n", pb)
	ctx := context.Background()
	if !e.lab.State.IAMEnforcement {
		t.Fatal("the lab did not turn IAM enforcement on")
	}
	run := func(args ...string) (string, string) {
		t.Helper()
		cmd := e.command(ctx, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("latentworker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		e.noSecret(t, "stdout of "+args[0], stdout.Bytes())
		e.noSecret(t, "stderr of "+args[0], stderr.Bytes())
		return stdout.String(), stderr.String()
	}
	out, _ := run("bake", "--no-verify", "--terminate-builder")
	ami := strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "image_id: ")
	key := filepath.Join(e.dir, "master-key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	handoffLog := fileSize(e.lab.State.RequestLog)
	snippet, _ := run("handoff", "--public-key", key+".pub", "--format", "snippet", "--build-wait-timeout", "5s")
	// The AMI now requires IMDSv2 (EC2LatentWorker passes no metadata
	// options). moto accepts the call but keeps nothing, so the request log
	// is the proof.
	if !slices.ContainsFunc(logCalls(t, e.lab.State.RequestLog, handoffLog), func(c loggedCall) bool {
		return c.Action == "ModifyImageAttribute" && c.Status == http.StatusOK
	}) {
		t.Errorf("handoff made no ModifyImageAttribute call (imds-support v2.0) on %s", ami)
	}
	var bundle struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
		AMI             string `json:"ami"`
		SecretFiles     struct {
			Password        string `json:"password"`
			AccessKeyID     string `json:"access_key_id"`
			SecretAccessKey string `json:"secret_access_key"`
		} `json:"secret_files"`
	}
	secretFiles, _ := filepath.Glob(filepath.Join(e.dir, cliWorker+"-*.secret"))
	if len(secretFiles) != 1 {
		t.Fatalf("secret files %v; want one", secretFiles)
	}
	// The secret file: the text, the snippet, then the bundle as JSON.
	full, err := os.ReadFile(secretFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	_, js, _ := bytes.Cut(full, []byte("\n--- JSON ---\n"))
	if err := json.Unmarshal(js, &bundle); err != nil || bundle.SecretAccessKey == "" {
		t.Fatalf("the bundle's JSON in %s: %v", secretFiles[0], err)
	}
	if bundle.AMI != ami || !strings.Contains(snippet, `ami="`+ami+`"`) || !strings.Contains(snippet, "build_wait_timeout=5,") {
		t.Fatalf("the handoff is not of %s with build_wait_timeout 5:\n%s", ami, snippet)
	}

	// The key keeps the policy exactly as handed off: the lab's IAM
	// evaluator decides its requests with conditions and resource ARNs.
	adminIAM := awsiam.NewFromConfig(e.lab.AWS)
	m := iam.NewManager(adminIAM)
	u, err := m.EnsureUser(ctx, cliWorker)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := m.Policy(ctx, u)
	if err != nil {
		t.Fatal(err)
	}

	mcfg := master.Config{
		Dir:              filepath.Join(e.dir, "master"),
		PBPort:           mustAtoi(t, strings.TrimPrefix(pb, "127.0.0.1:")),
		Extra:            snippet,
		ExtraWorkerNames: []string{cliWorker},
		AWSEndpoint:      e.lab.State.Endpoint,
		Secrets: map[string]string{
			bundle.SecretFiles.Password:        e.password,
			bundle.SecretFiles.AccessKeyID:     bundle.AccessKeyID,
			bundle.SecretFiles.SecretAccessKey: bundle.SecretAccessKey,
		},
		// Only the key in the secret files: no credentials from the
		// environment or from files.
		Env: []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=",
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"},
	}
	logStart := fileSize(e.lab.State.RequestLog)
	mst, err := master.Start(ctx, mcfg)
	if err != nil {
		t.Fatalf("a master with the handoff snippet: %v", err)
	}
	defer mst.Stop(context.Background())
	mc := mst.Client()
	c := e.lab.EC2("")

	// A build makes the master launch the AMI; the worker connects and
	// builds; build_wait_timeout later the master terminates the instance.
	req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "handoff e2e")
	if err != nil {
		t.Fatal(err)
	}
	b, err := mc.WaitBuild(ctx, req, 5*time.Minute)
	if err != nil || !b.Succeeded() {
		t.Fatalf("a build on the latent worker: %+v, %v; want success\n%s", b, err, mst.LogTail())
	}
	launched := instances(t, c, filter("image-id", ami))
	if len(launched) != 1 {
		t.Fatalf("instances of %s: %v; want the one the master launched", ami, launched)
	}
	if err := waitInstanceState(ctx, c, launched[0], "terminated", 2*time.Minute); err != nil {
		t.Fatalf("the master did not terminate %s after build_wait_timeout: %v\n%s", launched[0], err, mst.LogTail())
	}
	if live := liveInstances(t, c); len(live) > 0 {
		t.Errorf("after the master terminated its instance, the lab still has %v", live)
	}

	// Every call the master made with the handed-off key was allowed, and
	// each is an action of the generated policy.
	calls := masterCalls(t, e.lab.State.RequestLog, logStart, bundle.AccessKeyID)
	made := map[string]bool{}
	for _, call := range calls {
		action := "ec2:" + call.Action
		made[action] = true
		if call.Status != http.StatusOK {
			t.Errorf("the master's %s with the handed-off key = HTTP %d; want allowed", action, call.Status)
		}
		if !slices.Contains(policy.Actions(), action) {
			t.Errorf("the master called %s, which the generated policy does not allow", action)
		}
	}
	for _, want := range []string{"ec2:DescribeKeyPairs", "ec2:RunInstances", "ec2:DescribeInstances", "ec2:CreateTags", "ec2:TerminateInstances"} {
		if !made[want] {
			t.Errorf("the master made no %s call with the handed-off key (calls: %v)", want, made)
		}
	}
	t.Logf("the master's calls with the handed-off key: %d, actions %v", len(calls), slices.Sorted(maps.Keys(made)))

	// Outside the policy: denied to the handed-off key.
	keyCfg := e.lab.AWS.Copy()
	keyCfg.Credentials = credentials.NewStaticCredentialsProvider(bundle.AccessKeyID, bundle.SecretAccessKey, "")
	kEC2, kIAM := ec2.NewFromConfig(keyCfg), awsiam.NewFromConfig(keyCfg)
	vol, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.DeleteVolume(context.Background(), &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
	for name, call := range map[string]func() error{
		"ec2:CreateSecurityGroup": func() error {
			_, err := kEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("evil"), Description: aws.String("evil")})
			return err
		},
		"ec2:DeleteVolume": func() error {
			_, err := kEC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
			return err
		},
		"ec2:CreateImage": func() error {
			_, err := kEC2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(launched[0]), Name: aws.String("evil")})
			return err
		},
		"iam:CreateUser": func() error {
			_, err := kIAM.CreateUser(ctx, &awsiam.CreateUserInput{UserName: aws.String("evil")})
			return err
		},
		"iam:CreateAccessKey": func() error {
			_, err := kIAM.CreateAccessKey(ctx, &awsiam.CreateAccessKeyInput{UserName: aws.String(u.Name)})
			return err
		},
	} {
		if err := call(); !deniedErr(err) {
			t.Errorf("%s with the handed-off key = %v; want access denied", name, err)
		}
	}

	// handoff --check (every handoff above ended with it, and passed):
	// it fails, naming the call, once the key's policy lacks one
	// statement, and passes again with the policy as handed off.
	t.Run("check names the call a policy lacks", func(t *testing.T) {
		check := func() (string, error) {
			cmd := e.command(ctx, "handoff", "--check", "--check-wait", "1s")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			e.noSecret(t, "stderr of handoff --check", stderr.Bytes())
			return stdout.String() + stderr.String(), err
		}
		if out, err := check(); err != nil {
			t.Fatalf("handoff --check with the policy as handed off: %v\n%s", err, out)
		}
		for _, sid := range []string{"TagOnlyInstancesWithTheWorkerProfile", "LaunchOnlyTheseImagesKeySecurityGroupAndSubnet"} {
			lacking := policy
			lacking.Statement = slices.DeleteFunc(slices.Clone(policy.Statement), func(s iam.Statement) bool { return s.Sid == sid })
			if _, err := m.PutPolicy(ctx, u, lacking); err != nil {
				t.Fatal(err)
			}
			out, err := check()
			want := map[string]string{"TagOnlyInstancesWithTheWorkerProfile": "ec2:CreateTags (the master's CreateTags",
				"LaunchOnlyTheseImagesKeySecurityGroupAndSubnet": "ec2:RunInstances (the master's launch"}[sid]
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, want) {
				t.Errorf("handoff --check without statement %s = %v; want exit 1 naming %q\n%s", sid, err, want, out)
			}
		}
		if _, err := m.PutPolicy(ctx, u, policy); err != nil {
			t.Fatal(err)
		}
		if out, err := check(); err != nil {
			t.Fatalf("handoff --check with the policy restored: %v\n%s", err, out)
		}
	})

	// One condition of the policy changed (the launch's instance profile):
	// the master's launch is denied, as AWS would deny it. With the policy
	// restored, the master's retry launches and the build completes.
	t.Run("one condition changed denies the master's launch", func(t *testing.T) {
		changed := policy
		changed.Statement = slices.Clone(policy.Statement)
		for i, s := range changed.Statement {
			if s.Sid != "LaunchOnlyTheseTypesWithTheWorkerProfile" {
				continue
			}
			cond := iam.Condition{}
			for op, kv := range s.Condition {
				cond[op] = maps.Clone(kv)
			}
			arn := cond["ArnEquals"]["ec2:InstanceProfile"][0]
			cond["ArnEquals"]["ec2:InstanceProfile"] = []string{arn + "-other"}
			changed.Statement[i].Condition = cond
		}
		if _, err := m.PutPolicy(ctx, u, changed); err != nil {
			t.Fatal(err)
		}
		restored := false
		restore := func() {
			if !restored {
				restored = true
				if _, err := m.PutPolicy(ctx, u, policy); err != nil {
					t.Fatal(err)
				}
			}
		}
		defer restore()
		off := fileSize(e.lab.State.RequestLog)
		req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "denied launch")
		if err != nil {
			t.Fatal(err)
		}
		denied := false
		for deadline := time.Now().Add(2 * time.Minute); !denied && time.Now().Before(deadline); time.Sleep(time.Second) {
			for _, call := range masterCalls(t, e.lab.State.RequestLog, off, bundle.AccessKeyID) {
				if call.Action == "RunInstances" {
					if call.Status != http.StatusForbidden {
						t.Fatalf("the master's launch with one condition changed = HTTP %d; want 403 (UnauthorizedOperation)", call.Status)
					}
					denied = true
				}
			}
		}
		if !denied {
			t.Fatalf("the master made no launch within 2 minutes of a forced build\n%s", mst.LogTail())
		}
		if live := liveInstances(t, c); len(live) > 0 {
			t.Errorf("a denied launch left instances: %v", live)
		}
		restore()
		if b, err := mc.WaitBuild(ctx, req, 5*time.Minute); err != nil {
			t.Logf("the build request after the denied launch: %+v, %v", b, err)
		}
		for deadline := time.Now().Add(2 * time.Minute); len(liveInstances(t, c)) > 0; time.Sleep(2 * time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("instances left after the retried build: %v\n%s", liveInstances(t, c), mst.LogTail())
			}
		}
	})

	// A refresh while the master runs, as it will on the CPython fleet:
	// the builder's worker (and the verify instance's) connects to a
	// master that runs it as a latent worker and did not start it; the
	// master refuses it, the worker exits, and the bake still proves that
	// the service came up on its own.
	t.Run("refresh while the master runs", func(t *testing.T) {
		cmd := e.command(ctx, "bake", "--from-previous", "--terminate-builder")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("bake --from-previous with the master up: %v\n%s", err, stderr.String())
		}
		e.noSecret(t, "stderr", stderr.Bytes())
		if !strings.Contains(stdout.String(), "replaces: "+ami) {
			t.Errorf("bake --from-previous = %q; want it to replace %s", stdout.String(), ami)
		}
		newAMI := strings.TrimPrefix(strings.SplitN(stdout.String(), "\n", 2)[0], "image_id: ")
		if log, _ := os.ReadFile(filepath.Join(mst.Dir(), "twistd.log")); !bytes.Contains(log, []byte("received connection while not trying to substantiate")) {
			t.Errorf("the master never refused the builder's worker: the test did not test that")
		}

		// The verify script on a real boot of the new AMI, once the
		// master has refused its worker: the service counts as up.
		out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(newAMI), InstanceType: ec2types.InstanceTypeT3Small,
			KeyName: aws.String("latentworker-" + cliWorker), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(out.Instances[0].InstanceId)
		defer c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if err := waitInstanceState(ctx, c, id, "running", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		pem, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			t.Fatal(err)
		}
		client, err := provision.Dial(ctx, provision.Target{
			Addr: net.JoinHostPort(aws.ToString(d.Reservations[0].Instances[0].PublicIpAddress), "22"), User: "admin",
			Signer: signer, HostKey: provision.TrustOnFirstUse(nil),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		worker := scripts.Worker{Name: cliWorker, Master: pb, AdminName: "Lab Admin", AdminEmail: "admin@example.com", HostInfo: "x"}
		var facts scripts.Facts
		deadline := time.Now().Add(time.Minute)
		for facts.ServiceActive != "inactive" && time.Now().Before(deadline) {
			time.Sleep(time.Second)
			facts, _ = (&provision.Driver{Platform: platform.MustLookup("debian-12")}).Verify(ctx, client, worker, e.password)
		}
		if up, why := facts.ServiceUp(); !up || why != scripts.RefusedByMaster {
			t.Errorf("an instance of %s whose worker the master refused: ServiceUp() = %v, %q; want true, %q (facts %+v)", newAMI, up, why, scripts.RefusedByMaster, facts.Raw)
		}
	})

	t.Run("zombie after the master is killed", func(t *testing.T) {
		req, err := mc.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, "handoff e2e: a zombie")
		if err != nil {
			t.Fatal(err)
		}
		if err := mc.WaitWorkerConnected(ctx, cliWorker, 3*time.Minute); err != nil {
			t.Fatalf("build request %d: the worker did not connect: %v\n%s", req, err, mst.LogTail())
		}
		// While its worker is connected, an instance older than --max-age
		// is no zombie: it may be in the middle of a build.
		busy := liveInstances(t, c)
		time.Sleep(2500 * time.Millisecond)
		if out, stderr, code := e.sweep(ctx, "--max-age", "2s", "--master-url", mst.URL(), "--terminate", "--yes"); code == 3 || strings.Contains(out, busy[0]) {
			t.Fatalf("sweep --master-url with the worker connected = exit %d, report %q; want %s left alone\n%s", code, out, busy[0], stderr)
		}
		if live := liveInstances(t, c); !slices.Equal(live, busy) {
			t.Fatalf("after sweep --master-url with the worker connected: live %v; want %v", live, busy)
		}
		if err := mst.Kill(); err != nil {
			t.Fatal(err)
		}
		zombies := liveInstances(t, c)
		if len(zombies) != 1 {
			t.Fatalf("after the master was killed: live instances %v; want the one it launched", zombies)
		}
		sweep := func(args ...string) (string, string, int) {
			return e.sweep(ctx, append([]string{"--max-age", "2s"}, args...)...)
		}
		time.Sleep(2500 * time.Millisecond) // older than --max-age
		out, stderr, code := sweep()
		if code != 1 || !strings.Contains(out, zombies[0]) {
			t.Fatalf("sweep = exit %d; want 1 and a report naming %s\n%s\n%s", code, zombies[0], out, stderr)
		}
		t.Logf("sweep's report:\n%s", out)
		if _, stderr, code := sweep("--terminate", "--yes"); code != 3 {
			t.Fatalf("sweep --terminate --yes = exit %d; want 3\n%s", code, stderr)
		}
		if err := waitInstanceState(ctx, c, zombies[0], "terminated", time.Minute); err != nil {
			t.Fatalf("after sweep --terminate: %v", err)
		}
		if out, stderr, code := sweep(); code != 0 || out != "" || stderr != "" {
			t.Errorf("a second sweep = exit %d, stdout %q, stderr %q; want 0 and silence", code, out, stderr)
		}
	})

	// CPython's master as it really is: buildbot 4.3.0 on Python 3.13, the
	// CPython-shaped configuration with the handoff's worker class change
	// and settings fragment as printed (from the 0600 file), the same PB
	// port the AMI's worker connects to. checkconfig passes without
	// settings; with them, a build on the builder attached to the worker by
	// name launches the AMI with the handed-off key, and the instance is
	// terminated after build_wait_timeout.
	t.Run("CPython-shaped master on buildbot 4.3.0", func(t *testing.T) {
		flavour := master.RequirePipFlavour(t, "4.3.0")
		doc := string(full)
		class := handoff.Section(doc, handoff.SectionWorkerClass)
		settings := handoff.Section(doc, handoff.SectionSettings)
		if class == "" || !strings.Contains(settings, "secret_access_key: ") || !strings.Contains(settings, "password: ") {
			t.Fatalf("the secret file lacks the worker class change or the settings:\n%s", doc)
		}
		dir := copyDir(t, cpythonMasterDir)
		applyWorkerClassChange(t, dir, class)
		env := append(os.Environ(), noAWSEnv...)
		t0 := time.Now()
		if out, err := flavour.Checkconfig(ctx, dir, append(env, "AWS_ENDPOINT_URL=http://127.0.0.1:9")); err != nil {
			t.Fatalf("checkconfig without settings: %v\n%s", err, out)
		}
		t.Logf("%s checkconfig without settings: %v", flavour.Name, time.Since(t0).Round(time.Millisecond))

		www := mustAtoi(t, strings.TrimPrefix(freeLoopbackPort(t), "127.0.0.1:"))
		pbPort := mustAtoi(t, strings.TrimPrefix(pb, "127.0.0.1:"))
		yaml := settings + fmt.Sprintf("worker_port: %d\nweb_port: %d\n", pbPort, www)
		if err := os.WriteFile(filepath.Join(dir, "settings.yaml"), []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		logStart := fileSize(e.lab.State.RequestLog)
		t1 := time.Now()
		m2, err := master.Start(ctx, master.Config{
			Dir: filepath.Join(e.dir, "cpython-master"), ConfigDir: dir, Flavour: flavour,
			PBPort: pbPort, WWWPort: www, BuilderName: cpythonBuilder,
			// boto3 1.44 reads AWS_ENDPOINT_URL: the settings stay as handed off.
			Env: append(noAWSEnv, "AWS_ENDPOINT_URL="+e.lab.State.Endpoint),
		})
		if err != nil {
			t.Fatalf("the CPython-shaped master with the handoff's settings: %v", err)
		}
		defer m2.Stop(context.Background())
		t.Logf("%s master with the settings started in %v", flavour.Name, time.Since(t1).Round(time.Millisecond))
		mc2 := m2.Client()
		before := instances(t, c, filter("image-id", ami))
		req, err := mc2.ForceBuild(ctx, "force", cpythonBuilder, "handoff e2e: CPython-shaped master")
		if err != nil {
			t.Fatal(err)
		}
		b, err := mc2.WaitBuild(ctx, req, 5*time.Minute)
		if err != nil || !b.Succeeded() {
			t.Fatalf("a build on %s: %+v, %v; want success\n%s", cpythonBuilder, b, err, m2.LogTail())
		}
		var launched2 []string
		for _, id := range instances(t, c, filter("image-id", ami)) {
			if !slices.Contains(before, id) {
				launched2 = append(launched2, id)
			}
		}
		if len(launched2) != 1 {
			t.Fatalf("instances the 4.3.0 master launched from %s: %v; want one", ami, launched2)
		}
		if err := waitInstanceState(ctx, c, launched2[0], "terminated", 2*time.Minute); err != nil {
			t.Fatalf("the 4.3.0 master did not terminate %s: %v\n%s", launched2[0], err, m2.LogTail())
		}
		calls := masterCalls(t, e.lab.State.RequestLog, logStart, bundle.AccessKeyID)
		made := map[string]bool{}
		for _, call := range calls {
			made["ec2:"+call.Action] = true
			if call.Status != http.StatusOK {
				t.Errorf("the 4.3.0 master's ec2:%s with the handed-off key = HTTP %d; want allowed", call.Action, call.Status)
			}
		}
		for _, want := range []string{"ec2:RunInstances", "ec2:TerminateInstances"} {
			if !made[want] {
				t.Errorf("the 4.3.0 master made no %s call with the handed-off key (calls: %v)", want, made)
			}
		}
		t.Logf("the 4.3.0 master's calls with the handed-off key: %d, actions %v", len(calls), slices.Sorted(maps.Keys(made)))
	})

	// The self-finding handoff: no AMI in master.cfg. The master finds the
	// worker's newest completed AMI at each launch (valid_ami_owners,
	// valid_ami_location_regex) and the key, under the policy as handed off
	// and evaluated with its conditions, may launch it. After a refresh,
	// with no handoff and no admin, the master's next launch is of the new
	// AMI.
	t.Run("self-finding handoff launches the newest AMI after a refresh", func(t *testing.T) {
		cmd := e.command(ctx, "handoff", "--find-newest", "--format", "snippet", "--build-wait-timeout", "5s")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("handoff --find-newest: %v\n%s", err, stderr.String())
		}
		e.noSecret(t, "handoff --find-newest", append(stdout.Bytes(), stderr.Bytes()...))
		snippet := stdout.String()
		if strings.Contains(snippet, "ami=") || !strings.Contains(snippet, "valid_ami_location_regex=") {
			t.Fatalf("the snippet of handoff --find-newest names an AMI, or no regex:\n%s", snippet)
		}
		// The key under the policy as handed off, with the snippet's own
		// launch arguments (dry runs): the newest ready AMI may be
		// launched; the base image (another owner) and an AMI of the worker
		// whose ready tag is gone may not.
		cmd = e.command(ctx, "handoff", "--find-newest", "--format", "json")
		js, err := cmd.Output()
		if err != nil {
			t.Fatalf("handoff --find-newest --format json: %v", err)
		}
		var nb struct {
			AMI              string   `json:"ami"`
			Owners           []string `json:"valid_ami_owners"`
			KeyPairName      string   `json:"keypair_name"`
			SecurityGroupIDs []string `json:"security_group_ids"`
			SubnetID         string   `json:"subnet_id"`
			Profile          string   `json:"instance_profile_name"`
			InstanceType     string   `json:"instance_type"`
		}
		if err := json.Unmarshal(js, &nb); err != nil || len(nb.Owners) != 1 {
			t.Fatalf("handoff --find-newest --format json: %v\n%s", err, js)
		}
		keyCfg := e.lab.AWS.Copy()
		keyCfg.Credentials = credentials.NewStaticCredentialsProvider(bundle.AccessKeyID, bundle.SecretAccessKey, "")
		kEC2 := ec2.NewFromConfig(keyCfg)
		dryRun := func(image string) error {
			_, err := kEC2.RunInstances(ctx, &ec2.RunInstancesInput{
				ImageId: aws.String(image), InstanceType: ec2types.InstanceType(nb.InstanceType), KeyName: aws.String(nb.KeyPairName),
				SecurityGroupIds: nb.SecurityGroupIDs, SubnetId: aws.String(nb.SubnetID),
				IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String(nb.Profile)},
				MinCount:           aws.Int32(1), MaxCount: aws.Int32(1), DryRun: aws.Bool(true),
			})
			return err
		}
		var ae smithy.APIError
		if err := dryRun(nb.AMI); !errors.As(err, &ae) || ae.ErrorCode() != "DryRunOperation" {
			t.Errorf("the key's dry-run launch of the newest AMI %s = %v; want DryRunOperation", nb.AMI, err)
		}
		base, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Filters: []ec2types.Filter{filter("name", platform.MustLookup("debian-12").BaseName)}})
		if err != nil || len(base.Images) == 0 {
			t.Fatalf("the base images: %v", err)
		}
		if err := dryRun(aws.ToString(base.Images[0].ImageId)); !deniedErr(err) {
			t.Errorf("the key's dry-run launch of base image %s (owner %s) = %v; want denied", aws.ToString(base.Images[0].ImageId), aws.ToString(base.Images[0].OwnerId), err)
		}
		ready := []ec2types.Tag{{Key: aws.String("latentworker:ready")}}
		if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{ami}, Tags: ready}); err != nil {
			t.Fatal(err)
		}
		if err := dryRun(ami); !deniedErr(err) {
			t.Errorf("the key's dry-run launch of %s without its ready tag = %v; want denied", ami, err)
		}
		ready[0].Value = aws.String(time.Now().UTC().Format(time.RFC3339))
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{ami}, Tags: ready}); err != nil {
			t.Fatal(err)
		}

		newest := func() string {
			t.Helper()
			out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{
				filter("tag:latentworker:worker", cliWorker), filter("tag-key", "latentworker:ready")}})
			if err != nil || len(out.Images) == 0 {
				t.Fatalf("the worker's ready AMIs: %v (%d)", err, len(out.Images))
			}
			slices.SortFunc(out.Images, func(a, b ec2types.Image) int { return strings.Compare(aws.ToString(b.Name), aws.ToString(a.Name)) })
			return aws.ToString(out.Images[0].ImageId)
		}
		// The first master (killed above when the whole test runs) frees
		// the PB port the AMIs' worker connects to.
		if err := mst.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cfg := mcfg
		cfg.Dir, cfg.Extra = filepath.Join(e.dir, "master-find-newest"), snippet
		m3, err := master.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("a master with the self-finding snippet: %v", err)
		}
		defer m3.Stop(context.Background())
		mc3 := m3.Client()
		build := func(why string) string {
			t.Helper()
			before := instances(t, c)
			off := fileSize(e.lab.State.RequestLog)
			req, err := mc3.ForceBuild(ctx, master.DefaultSchedulerName, master.DefaultBuilderName, why)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := mc3.WaitBuild(ctx, req, 5*time.Minute); err != nil || !b.Succeeded() {
				t.Fatalf("%s: %+v, %v; want success\n%s", why, b, err, m3.LogTail())
			}
			for _, call := range masterCalls(t, e.lab.State.RequestLog, off, bundle.AccessKeyID) {
				if call.Status != http.StatusOK {
					t.Errorf("%s: the master's ec2:%s with the handed-off key = HTTP %d; want allowed", why, call.Action, call.Status)
				}
			}
			var launched []string
			for _, id := range instances(t, c) {
				if !slices.Contains(before, id) {
					launched = append(launched, id)
				}
			}
			if len(launched) != 1 {
				t.Fatalf("%s: the master launched %v; want one instance", why, launched)
			}
			d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: launched})
			if err != nil {
				t.Fatal(err)
			}
			if err := waitInstanceState(ctx, c, launched[0], "terminated", 2*time.Minute); err != nil {
				t.Fatalf("%s: the master did not terminate %s: %v\n%s", why, launched[0], err, m3.LogTail())
			}
			return aws.ToString(d.Reservations[0].Instances[0].ImageId)
		}
		want := newest()
		if got := build("self-finding: the newest AMI"); got != want {
			t.Fatalf("the master launched %s; want the newest ready AMI %s", got, want)
		}

		// A refresh, and nothing else: no handoff, no change on the master.
		cmd = e.command(ctx, "bake", "--from-previous", "--terminate-builder", "--no-verify")
		stdout.Reset()
		stderr.Reset()
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("bake --from-previous: %v\n%s", err, stderr.String())
		}
		refreshed := strings.TrimPrefix(strings.SplitN(stdout.String(), "\n", 2)[0], "image_id: ")
		if refreshed == want || newest() != refreshed {
			t.Fatalf("after the refresh the newest ready AMI is %s; want the refresh's %s (before: %s)", newest(), refreshed, want)
		}
		if got := build("self-finding: after a refresh"); got != refreshed {
			t.Fatalf("after a refresh the master launched %s; want the new AMI %s\n%s", got, refreshed, m3.LogTail())
		}
		t.Logf("the master launched %s, then after a refresh %s, with no handoff in between", want, refreshed)
	})
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// instances lists the IDs of the lab's instances that match filters.
func instances(t *testing.T, c *ec2.Client, filters ...ec2types.Filter) []string {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	return ids
}

func filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

// liveInstances lists the lab's instances that are not terminated.
func liveInstances(t *testing.T, c *ec2.Client) []string {
	t.Helper()
	return instances(t, c, filter("instance-state-name", "pending", "running", "stopping", "stopped", "shutting-down"))
}

func waitInstanceState(ctx context.Context, c *ec2.Client, id, state string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err == nil && len(out.Reservations) == 1 {
			last = string(out.Reservations[0].Instances[0].State.Name)
			if last == state {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New(id + " is " + last + ", not " + state + ", after " + timeout.String())
		}
		time.Sleep(time.Second)
	}
}

// loggedCall is one line of the lab's request log.
type loggedCall struct {
	Service     string `json:"service"`
	Action      string `json:"action"`
	Status      int    `json:"status"`
	AccessKeyID string `json:"access_key_id"`
}

// logCalls returns every call in the request log from offset.
func logCalls(t *testing.T, path string, offset int64) []loggedCall {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	var calls []loggedCall
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c loggedCall
		if json.Unmarshal(sc.Bytes(), &c) == nil {
			calls = append(calls, c)
		}
	}
	return calls
}

// masterCalls reads the request log from offset and returns the calls
// signed with key.
func masterCalls(t *testing.T, path string, offset int64, key string) []loggedCall {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	var calls []loggedCall
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c loggedCall
		if json.Unmarshal(sc.Bytes(), &c) == nil && c.AccessKeyID == key {
			if c.Service != "ec2" {
				t.Errorf("the master called %s:%s", c.Service, c.Action)
			}
			calls = append(calls, c)
		}
	}
	return calls
}

// deniedErr says whether err is AWS's (or moto's) access denial.
func deniedErr(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDenied", "UnauthorizedOperation", "AccessDeniedException":
			return true
		}
	}
	// moto's IAM denial has a body the SDK's IAM deserializer does not
	// read; the status is still 403.
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusForbidden
}
