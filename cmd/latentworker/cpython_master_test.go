package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/handoff"
	"github.com/latentworker/latentworker/lab/master"
)

// cpythonMasterDir is the CPython-shaped master configuration the tests
// apply the handoff to.
const cpythonMasterDir = "testdata/cpython-master"

// cpythonBuilder is the builder that the CPython-shaped configuration
// attaches to the worker by name.
const cpythonBuilder = cliWorker + "-lab"

// copyDir copies the regular files of src into a new directory under t's
// temporary directory and returns it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "cfg")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// applyWorkerClassChange applies handoff's worker-class block, as printed,
// to the configuration in dir as an admin would: step 2's function is
// appended to custom/workers.py, and step 3's code (the commented lines
// indented by 8 spaces after "#") replaces the statement that makes the
// plain Worker, which becomes its else branch.
func applyWorkerClassChange(t *testing.T, dir, block string) {
	t.Helper()
	path := filepath.Join(dir, "custom", "workers.py")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)

	// Step 3: the code in the comment.
	var step3 []string
	inStep3 := false
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "# 3."):
			inStep3 = true
		case inStep3 && strings.HasPrefix(line, "#        ") && !strings.Contains(line, "self.bb_worker = _worker.Worker(name, str(pw), ..."):
			step3 = append(step3, strings.TrimPrefix(line, "#        "))
		case inStep3 && strings.HasPrefix(line, "#    max_builds"):
			inStep3 = false
		}
	}
	if len(step3) == 0 {
		t.Fatalf("no step 3 code in the worker class change:\n%s", block)
	}
	// The plain Worker statement in workers.py, from its line to the
	// closing parenthesis at the same indentation.
	const start = "        self.bb_worker = _worker.Worker("
	i := strings.Index(text, start)
	j := strings.Index(text[i:], "\n        )\n")
	if i < 0 || j < 0 {
		t.Fatalf("no plain Worker statement in %s", path)
	}
	plain := text[i : i+j+len("\n        )\n")]
	var repl strings.Builder
	for _, line := range step3 {
		if strings.Contains(line, "_worker.Worker(...)  # as before") {
			for _, pl := range strings.Split(strings.TrimRight(plain, "\n"), "\n") {
				repl.WriteString("    " + pl + "\n")
			}
			continue
		}
		repl.WriteString("        " + line + "\n")
	}
	text = text[:i] + repl.String() + text[i+len(plain):]
	// Step 2: the function, at module level.
	text += "\n\n" + block
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noAWSEnv is the environment of a master or checkconfig that must not
// reach AWS: no credentials from anywhere, and an endpoint nothing listens
// on, so any call fails.
var noAWSEnv = []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=",
	"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}

// TestCPythonConfigCheckconfig is CPython's CI on the CPython-shaped
// configuration, before and after the handoff's worker class change:
// buildbot 4.3.0 on Python 3.13, no settings file, no secrets, no AWS
// credentials (and an AWS endpoint that refuses every connection). Then
// Debian's 3.7 on the generic master.cfg snippet, with no secret files.
func TestCPythonConfigCheckconfig(t *testing.T) {
	if testing.Short() {
		t.Skip("runs buildbot checkconfig (the first run builds a root filesystem and a venv, ~2 min)")
	}
	flavour := master.RequirePipFlavour(t, "4.3.0")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	env := append(os.Environ(), noAWSEnv...)
	env = append(env, "AWS_ENDPOINT_URL=http://127.0.0.1:9")

	b := handoff.Bundle{
		WorkerName: cliWorker, MasterAddress: "127.0.0.1:9989", InstanceTypes: []string{"t3.small"},
		Region: "us-east-1", AMI: "ami-0123456789abcdef0", AccessKeyID: "AKIAIOSFODNN7EXAMPLE",
		SecretAccessKey: config.NewSecret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
		KeyPairName:     "latentworker-" + cliWorker, SecurityGroupID: "sg-0a1b2c3d4e5f60718",
		SubnetID: "subnet-0123abcd", InstanceProfileName: "latentworker-" + cliWorker,
		Tags: map[string]string{"latentworker:worker": cliWorker},
	}
	block, err := handoff.WorkerClassChange(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, applied := range []bool{false, true} {
		dir := copyDir(t, cpythonMasterDir)
		if applied {
			applyWorkerClassChange(t, dir, block)
		}
		t0 := time.Now()
		out, err := flavour.Checkconfig(ctx, dir, env)
		if err != nil || !strings.Contains(string(out), "Config file is good!") {
			wp, _ := os.ReadFile(filepath.Join(dir, "custom", "workers.py"))
			t.Fatalf("%s checkconfig (worker class change applied: %v) = %v\n%s\n--- workers.py ---\n%s", flavour.Name, applied, err, out, wp)
		}
		t.Logf("%s checkconfig, no settings, worker class change applied: %v: %v", flavour.Name, applied, time.Since(t0).Round(time.Millisecond))
	}

	// The generic snippet on Debian's 3.7, without the secret files.
	snippet, err := handoff.MasterCfgSnippet(b)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := "from buildbot.plugins import schedulers, steps, util\n\n" +
		"c = BuildmasterConfig = {}\n" +
		"c['protocols'] = {'pb': {'port': 'tcp:0:interface=127.0.0.1'}}\n" +
		"c['db'] = {'db_url': 'sqlite:///state.sqlite'}\n" +
		"c['buildbotNetUsageData'] = None\n\n" + snippet + "\n" +
		"c['builders'] = [util.BuilderConfig(name='check', workernames=[LATENTWORKER_WORKER_NAME],\n" +
		"    factory=util.BuildFactory([steps.ShellCommand(command=['true'])]))]\n" +
		"c['schedulers'] = [schedulers.ForceScheduler(name='force', builderNames=['check'])]\n" +
		"assert type(c['workers'][0]).__name__ == 'Worker', c['workers']\n"
	if err := os.WriteFile(filepath.Join(dir, "master.cfg"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []master.Flavour{master.Debian(), flavour} {
		t0 := time.Now()
		out, err := f.Checkconfig(ctx, dir, env)
		if err != nil || !strings.Contains(string(out), "Config file is good!") {
			t.Fatalf("%s checkconfig of the generic snippet without secrets = %v\n%s\n%s", f.Name, err, out, cfg)
		}
		t.Logf("%s checkconfig of the generic snippet, no secrets: %v", f.Name, time.Since(t0).Round(time.Millisecond))
	}
}
