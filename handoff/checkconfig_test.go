package handoff

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// need returns err as a skip, or a failure when CI=true.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required when CI=true: %v", what, err)
	}
	t.Skipf("%s not available: %v", what, err)
}

// labPrelude is lab-only: Debian's boto3 1.26 ignores AWS_ENDPOINT_URL, so
// every boto3 Session the master makes is pointed at moto. It goes before
// the snippet, which stays exactly as the admins get it.
const labPrelude = `# --- lab only: point every boto3 Session at the local moto_server ---
import boto3


class _LabSession(boto3.Session):
    def client(self, *args, **kwargs):
        kwargs.setdefault("endpoint_url", LAB_ENDPOINT)
        return super().client(*args, **kwargs)

    def resource(self, *args, **kwargs):
        kwargs.setdefault("endpoint_url", LAB_ENDPOINT)
        return super().resource(*args, **kwargs)


boto3.Session = _LabSession
# --- end of lab only ---

from buildbot.plugins import schedulers, secrets, steps, util

c = BuildmasterConfig = {}
c['workers'] = []
c['protocols'] = {'pb': {'port': 'tcp:0:interface=127.0.0.1'}}
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['buildbotNetUsageData'] = None
c['title'] = 'latentworker handoff checkconfig'

`

const masterPostlude = `
c['secretsProviders'] = [secrets.SecretInAFile(dirname=LATENTWORKER_SECRETS_DIR)]
c['builders'] = [util.BuilderConfig(
    name="check",
    workernames=[WORKER_NAME],
    factory=util.BuildFactory([steps.ShellCommand(command=["true"])]),
)]
c['schedulers'] = [schedulers.ForceScheduler(name="force", builderNames=["check"])]

# The constructor loaded the key pair through moto, with the key handed off.
_w = c['workers'][0]
assert _w.ec2.meta.client.meta.endpoint_url == LAB_ENDPOINT, _w.ec2.meta.client.meta.endpoint_url
assert _w.session.get_credentials().access_key == ACCESS_KEY_ID
assert _w.session.get_credentials().secret_key == SECRET_ACCESS_KEY_SHA and False or True
`

// TestBuildbotCheckconfig runs Debian's buildbot 3.7 checkconfig on a
// master.cfg built around the snippet. EC2LatentWorker's constructor
// calls DescribeKeyPairs (and CreateKeyPair when it is missing), so the
// master talks to a moto_server of the test's own, where the test has
// created the key pair and security group handoff would have.
func TestBuildbotCheckconfig(t *testing.T) {
	const buildbot = "/usr/bin/buildbot"
	_, err := os.Stat(buildbot)
	need(t, buildbot, err)
	url := mototest.Start(t)

	const region = "eu-west-1"
	api := ec2.New(ec2.Options{
		Region:       region,
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", testSecret, ""),
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b := fixture()
	b.Region = region
	if _, err := api.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(b.KeyPairName)}); err != nil {
		t.Fatalf("CreateKeyPair: %v", err)
	}
	subnets, err := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil || len(subnets.Subnets) == 0 {
		t.Fatalf("DescribeSubnets = %v, %v; want moto's default subnets", subnets, err)
	}
	sn := subnets.Subnets[0]
	sg, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:   aws.String("latentworker-" + b.WorkerName),
		Description: aws.String("latentworker worker, no inbound rules"),
		VpcId:       sn.VpcId,
	})
	if err != nil {
		t.Fatalf("CreateSecurityGroup: %v", err)
	}
	b.SubnetID = aws.ToString(sn.SubnetId)
	b.SecurityGroupID = aws.ToString(sg.GroupId)
	b.InstanceTypes = []string{"t3.small", "t3.medium"}
	b.Changes.OldAMI = "ami-0fedcba9876543210"
	b.Tags["Owner"] = "Zoë Müller"
	b.SecretAccessKey = config.NewSecret(testSecret)

	snippet, err := MasterCfgSnippet(b)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{
		PasswordSecretName(b.WorkerName):        "worker-password",
		AccessKeyIDSecretName(b.WorkerName):     b.AccessKeyID + "\n",
		SecretAccessKeySecretName(b.WorkerName): b.SecretAccessKey.Reveal() + "\n",
	} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	consts := "LAB_ENDPOINT = " + pyString(url) + "\n" +
		"WORKER_NAME = " + pyString(b.WorkerName) + "\n" +
		"ACCESS_KEY_ID = " + pyString(b.AccessKeyID) + "\n"
	post := strings.Replace(masterPostlude,
		"assert _w.session.get_credentials().secret_key == SECRET_ACCESS_KEY_SHA and False or True\n",
		"import hashlib\nassert hashlib.sha256(_w.session.get_credentials().secret_key.encode()).hexdigest() == "+
			pyString(sha256hex(testSecret))+"\n", 1)
	cfg := consts + labPrelude + snippet + post
	if err := os.WriteFile(filepath.Join(dir, "master.cfg"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, buildbot, "checkconfig", dir)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + dir,
		"LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildbot checkconfig: %v\n%s\n--- master.cfg ---\n%s", err, out, cfg)
	}
	if !strings.Contains(string(out), "Config file is good!") {
		t.Errorf("buildbot checkconfig output lacks %q:\n%s", "Config file is good!", out)
	}
	if strings.Contains(string(out), testSecret) {
		t.Errorf("buildbot checkconfig output contains the secret")
	}

	// The key pair was found, not created: the constructor made no
	// CreateKeyPair call, which the worker's policy would deny.
	kps, err := api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(kps.KeyPairs) != 1 || aws.ToString(kps.KeyPairs[0].KeyName) != b.KeyPairName {
		t.Errorf("key pairs after checkconfig = %v; want only %s", keyNames(kps.KeyPairs), b.KeyPairName)
	}
}

func keyNames(kps []ec2types.KeyPairInfo) []string {
	var n []string
	for _, k := range kps {
		n = append(n, aws.ToString(k.KeyName))
	}
	return n
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
