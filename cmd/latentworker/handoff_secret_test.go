package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/iam"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// motoCLI runs the latentworker binary against a moto_server of the
// test's own (no lab, no instance boots): for what is decided before, or
// without, an instance.
type motoCLI struct {
	url, dir, config string
	bin              string
	ec2              *ec2.Client
	iam              *awsiam.Client
}

const motoWorker = "lw-moto"

func newMotoCLI(t *testing.T) *motoCLI {
	t.Helper()
	m := &motoCLI{url: mototest.Start(t), dir: t.TempDir(), bin: latentworkerBin(t)}
	creds := credentials.NewStaticCredentialsProvider("testing", "testing", "")
	m.ec2 = ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(m.url), Credentials: creds})
	m.iam = awsiam.New(awsiam.Options{Region: "us-east-1", BaseEndpoint: aws.String(m.url), Credentials: creds})
	pw := filepath.Join(m.dir, "password")
	if err := os.WriteFile(pw, []byte("moto-pw-"+fleet.NewRunID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.config = filepath.Join(m.dir, "latentworker.toml")
	cfg := fmt.Sprintf("[worker]\nname = %q\nmaster = \"master.example.org:9989\"\nadmin_name = \"A\"\nadmin_email = \"a@example.com\"\npassword_file = %q\n[aws]\nregion = \"us-east-1\"\ninstance_type = \"t3.small\"\n", motoWorker, pw)
	if err := os.WriteFile(m.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// run runs latentworker with args in the test's directory and returns its
// stdout, stderr and exit code.
func (m *motoCLI) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(m.bin, append([]string{"-c", m.config}, args...)...)
	cmd.Dir = m.dir
	cmd.Env = append(os.Environ(), "AWS_ENDPOINT_URL="+m.url, "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing",
		"AWS_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "LATENTWORKER_PASSWORD=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// image makes an AMI as a completed bake of the worker leaves it (tagged,
// ready), named for t, from an instance of one of moto's AMIs.
func (m *motoCLI) image(t *testing.T, at time.Time, extra map[string]string) string {
	t.Helper()
	name := fleet.AMIName("latentworker", motoWorker, at)
	tags := fleet.Labels{RunID: fleet.NewRunID(), Worker: motoWorker, Master: "baked.example.org:9020"}.Map(fleet.RoleImage, name)
	tags[fleet.TagReady] = at.UTC().Format(time.RFC3339)
	maps.Copy(tags, extra)
	return mototest.Image(t, m.ec2, name, tags)
}

// handedOffParts lists what a handoff creates that exists: the key pair,
// the security group, the role, the instance profile, the user and its
// access keys.
func (m *motoCLI) handedOffParts(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	name := iam.Name(motoWorker)
	var got []string
	if kp, err := m.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}); err == nil {
		for _, k := range kp.KeyPairs {
			got = append(got, "key pair "+aws.ToString(k.KeyName))
		}
	}
	if sg, err := m.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{name}}}}); err == nil {
		for _, g := range sg.SecurityGroups {
			got = append(got, "security group "+aws.ToString(g.GroupId))
		}
	}
	if _, err := m.iam.GetRole(ctx, &awsiam.GetRoleInput{RoleName: aws.String(name)}); err == nil {
		got = append(got, "role "+name)
	}
	if _, err := m.iam.GetInstanceProfile(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)}); err == nil {
		got = append(got, "instance profile "+name)
	}
	if _, err := m.iam.GetUser(ctx, &awsiam.GetUserInput{UserName: aws.String(name)}); err == nil {
		got = append(got, "user "+name)
		keys, _ := m.iam.ListAccessKeys(ctx, &awsiam.ListAccessKeysInput{UserName: aws.String(name)})
		for _, k := range keys.AccessKeyMetadata {
			got = append(got, "access key "+aws.ToString(k.AccessKeyId))
		}
	}
	return got
}

// TestHandoffSecretsNeverUnstored: cases 4, 5 and 6 of issue 21. Every
// place a new secret goes is checked before anything is created: a
// --secret-file that is a directory or in a missing directory is bad input
// (exit 2) and nothing is created. A secret asked for (--encrypt-to,
// --show-secret) when the key is reused, so that there is no new secret, is
// bad input naming --rotate, with no .age file and nothing changed.
func TestHandoffSecretsNeverUnstored(t *testing.T) {
	m := newMotoCLI(t)
	m.image(t, time.Now(), nil)
	pub := filepath.Join(m.dir, "master.pub")
	if err := os.WriteFile(pub, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkLFV3cQtbfeE3LRFhQUIQzu0RgBr2iiCNgMVm0jU10 owner@example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(m.dir, "a-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, secretFile := range []string{"a-dir", filepath.Join("no-such-dir", "w.secret")} {
		_, stderr, code := m.run(t, "handoff", "--public-key", pub, "--secret-file", secretFile)
		if code != exitBadInput || !strings.Contains(stderr, "--secret-file") || !strings.Contains(stderr, secretFile) {
			t.Errorf("handoff --secret-file %s = exit %d\n%s\nwant %d naming --secret-file and the path", secretFile, code, stderr, exitBadInput)
		}
		if got := m.handedOffParts(t); len(got) > 0 {
			t.Errorf("handoff --secret-file %s created %v; want nothing", secretFile, got)
		}
	}

	// A key handed off before: the admins have its secret, nobody else.
	ctx := context.Background()
	u, err := iam.NewManager(m.iam).EnsureUser(ctx, motoWorker)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iam.NewManager(m.iam).CreateKey(ctx, u); err != nil {
		t.Fatal(err)
	}
	before := m.handedOffParts(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"handoff", "--public-key", pub, "--encrypt-to", id.Recipient().String()},
		{"handoff", "--public-key", pub, "--format", "settings", "--show-secret"},
		{"handoff", "--public-key", pub, "--show-secret"},
	} {
		stdout, stderr, code := m.run(t, args...)
		if code != exitBadInput || !strings.Contains(stderr, "--rotate") || stdout != "" {
			t.Errorf("%v with a reused key = exit %d, stdout %q\n%s\nwant %d, nothing on stdout, naming --rotate", args, code, stdout, stderr, exitBadInput)
		}
		if got := m.handedOffParts(t); strings.Join(got, ",") != strings.Join(before, ",") {
			t.Errorf("%v with a reused key: %v exist; want only %v, as before", args, got, before)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(m.dir, "*.age")); len(files) > 0 {
		t.Errorf("an --encrypt-to with no new secret wrote %v", files)
	}
}
