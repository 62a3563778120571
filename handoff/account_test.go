package handoff

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An account ID may start with 0. buildbot's EC2LatentWorker (3.7 and
// 4.3.0 alike) takes valid_ami_owners only as ints and hands their str()
// to DescribeImages' Owners filter, so an int loses the zero (and the
// literal 0123... is a Python syntax error; YAML reads it as a string or
// an octal number). The master.cfg block and CPython's worker class hand
// it an int subclass whose str() keeps the 12 digits: this test runs the
// real buildbot's constructor (the host's) on both, up to its region
// check, and reads what it would ask EC2 for.
func TestAccountIDWithLeadingZero(t *testing.T) {
	if testing.Short() {
		t.Skip("runs buildbot's Python: not with -short")
	}
	_, err := exec.LookPath("/usr/bin/buildbot")
	need(t, "buildbot", err)
	const account = "012345678901"
	b := newest()
	b.AMIOwner = account
	b.AMILocationRegex = AMILocationRegex(account, "latentworker", b.WorkerName)
	b.Region = "zz-nowhere-1" // not a region boto3 knows: the constructor stops there, before any call
	snippet, err := MasterCfgSnippet(b)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := SettingsFragment(b)
	if err != nil {
		t.Fatal(err)
	}
	class, err := WorkerClassChange(b)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{AccessKeyIDSecretName(b.WorkerName): b.AccessKeyID, SecretAccessKeySecretName(b.WorkerName): testSecret} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"snippet.py": snippet, "settings.yaml": settings, "worker_class.py": class}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	probe := `
import sys, yaml
from buildbot.plugins import worker as plugins
from buildbot.worker import ec2

seen = []

class Probe(ec2.EC2LatentWorker):
    """The real constructor, stopped by its own region check."""
    def __init__(self, *args, **kwargs):
        try:
            super().__init__(*args, **kwargs)
        except ValueError as e:
            if "region does not exist" not in str(e):
                raise
        seen.append(self.valid_ami_owners)

plugins.EC2LatentWorker = Probe
ec2.EC2LatentWorker = Probe

basedir = sys.argv[1]
c = {}
exec(open(basedir + "/snippet.py").read())
ns = {}
exec(open(basedir + "/worker_class.py").read(), ns)
settings = yaml.safe_load(open(basedir + "/settings.yaml"))
name, w = next(iter(settings["workers"].items()))
ns["ec2_latent_worker"](name, "pw", w["ec2"])
print(seen)
`
	if err := os.WriteFile(filepath.Join(dir, "probe.py"), []byte(probe), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "/usr/bin/python3", filepath.Join(dir, "probe.py"), dir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildbot's EC2LatentWorker on the handoff's output: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "[['012345678901'], ['012345678901']]"; got != want {
		t.Errorf("the owners EC2LatentWorker would ask DescribeImages for (master.cfg block, worker class) = %s; want %s", got, want)
	}
}
