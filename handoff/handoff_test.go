package handoff

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// testSecret is the fixture's secret access key (AWS's documentation
// example): the leak tests look for it everywhere.
const testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

// testPassword is the fixture's worker password.
const testPassword = "fixture-worker-pw-7Qz"

// fixture is a first handoff of a worker.
func fixture() Bundle {
	return Bundle{
		WorkerName:          "ware-debian-x86",
		MasterAddress:       "buildbot-api.python.org:9020",
		InstanceTypes:       []string{"t3.small"},
		ParallelTests:       2,
		Region:              "eu-west-1",
		AMI:                 "ami-0123456789abcdef0",
		AccessKeyID:         "AKIAIOSFODNN7EXAMPLE",
		SecretAccessKey:     config.NewSecret(testSecret),
		Password:            config.NewSecret(testPassword),
		KeyPairName:         "latentworker-ware-debian-x86",
		SecurityGroupID:     "sg-0a1b2c3d4e5f60718",
		SubnetID:            "subnet-0123abcd",
		InstanceProfileName: "latentworker-ware-debian-x86",
		Tags: map[string]string{
			fleet.TagWorker: "ware-debian-x86",
			fleet.TagName:   "buildbot worker ware-debian-x86",
		},
	}
}

// refreshed is the bundle after a refresh that keeps the key: a new AMI,
// no secret.
func refreshed() Bundle {
	b := fixture()
	b.ReplacesAMI = b.AMI
	b.Changes.OldAMI = b.AMI
	b.AMI = "ami-0fedcba9876543210"
	b.SecretAccessKey = config.Secret{}
	b.Password = config.Secret{}
	return b
}

// newest is a first bundle whose master finds the worker's newest AMI.
func newest() Bundle {
	b := fixture()
	b.FindNewest, b.AMIOwner = true, "123456789012"
	b.AMILocationRegex = AMILocationRegex(b.AMIOwner, "latentworker", b.WorkerName)
	return b
}

// rotated is a bundle with a rotated key, two instance types, a secrets
// directory, a shorter build wait and a tag that is not ASCII.
func rotated() Bundle {
	b := fixture()
	b.InstanceTypes = []string{"t3.small", "t3.medium"}
	b.Changes.OldAccessKeyID = b.AccessKeyID
	b.AccessKeyID = "AKIAI44QH8DHBEXAMPLE"
	b.SecretsDir = "/etc/buildbot/secrets"
	b.BuildWaitTimeout = 5 * time.Minute
	b.Tags["Owner"] = "Zoë Müller"
	return b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./handoff -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (run go test ./handoff -update and review the diff):\n%s", name, path, got)
	}
}

func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		b    Bundle
	}{
		{"first", fixture()},
		{"refresh", refreshed()},
		{"rotated", rotated()},
		{"newest", newest()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text, err := Text(c.b, TextOptions{SecretFile: "/home/owner/ware-debian-x86.bundle"})
			if err != nil {
				t.Fatalf("Text: %v", err)
			}
			golden(t, c.name+".txt", []byte(text))
			shown, err := Text(c.b, TextOptions{ShowSecret: true})
			if err != nil {
				t.Fatalf("Text(ShowSecret): %v", err)
			}
			golden(t, c.name+".secret.txt", []byte(shown))
			js, err := JSON(c.b, false)
			if err != nil {
				t.Fatalf("JSON: %v", err)
			}
			golden(t, c.name+".json", js)
			js, err = JSON(c.b, true)
			if err != nil {
				t.Fatalf("JSON(showSecret): %v", err)
			}
			golden(t, c.name+".secret.json", js)
			snippet, err := MasterCfgSnippet(c.b)
			if err != nil {
				t.Fatalf("MasterCfgSnippet: %v", err)
			}
			golden(t, c.name+".master.cfg", []byte(snippet))
			settings, err := SettingsFragment(c.b)
			if err != nil {
				t.Fatalf("SettingsFragment: %v", err)
			}
			golden(t, c.name+".settings.yaml", []byte(settings))
			class, err := WorkerClassChange(c.b)
			if err != nil {
				t.Fatalf("WorkerClassChange: %v", err)
			}
			golden(t, c.name+".worker-class.py", []byte(class))
			doc, err := Document(c.b, TextOptions{SecretFile: "/home/owner/ware-debian-x86.bundle"})
			if err != nil {
				t.Fatalf("Document: %v", err)
			}
			golden(t, c.name+".document.txt", []byte(doc))
			for _, secret := range []string{testSecret, testPassword} {
				for name, out := range map[string]string{"Text": text, "snippet": snippet, "worker class": class, "Document": doc} {
					if strings.Contains(out, secret) {
						t.Errorf("%s holds a secret", name)
					}
				}
			}
			// The sections come in the order the admins need them.
			last := -1
			for _, sec := range []string{"1. Instance size:", SectionSettings, SectionWorkerClass, SectionSnippet} {
				i := strings.Index(doc, sec)
				if i <= last {
					t.Errorf("Document: %q at %d, after %d; want the four items, settings, worker class, snippet in order", sec, i, last)
				}
				last = i
			}
		})
	}
}

func TestTextOrder(t *testing.T) {
	text, err := Text(fixture(), TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The guide's four items come first, in its order, then the rest,
	// and the warning last.
	order := []string{"t3.small", "eu-west-1", "ami-0123456789abcdef0", "AKIAIOSFODNN7EXAMPLE",
		"Secret access key", "Worker name", "sg-0a1b2c3d4e5f60718", "WARNING: The AMI holds the worker password"}
	at := 0
	for _, s := range order {
		i := strings.Index(text[at:], s)
		if i < 0 {
			t.Fatalf("Text: %q missing or out of order after offset %d:\n%s", s, at, text)
		}
		at += i + len(s)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Bundle)
		field string // "" for valid
	}{
		{"fixture", func(*Bundle) {}, ""},
		{"refresh", func(b *Bundle) { *b = refreshed() }, ""},
		{"rotated", func(b *Bundle) { *b = rotated() }, ""},
		{"no tags", func(b *Bundle) { b.Tags = nil }, ""},
		{"IP master", func(b *Bundle) { b.MasterAddress = "[::1]:9989" }, ""},
		{"quote in name", func(b *Bundle) { b.WorkerName = `w", password="x` }, "WorkerName"},
		{"dot in name", func(b *Bundle) { b.WorkerName = "w.x" }, "WorkerName"},
		{"digit first", func(b *Bundle) { b.WorkerName = "1w" }, "WorkerName"},
		{"long name", func(b *Bundle) { b.WorkerName = strings.Repeat("w", 51) }, "WorkerName"},
		{"no port", func(b *Bundle) { b.MasterAddress = "buildbot-api.python.org" }, "MasterAddress"},
		{"bad host", func(b *Bundle) { b.MasterAddress = "a b:9020" }, "MasterAddress"},
		{"no types", func(b *Bundle) { b.InstanceTypes = nil }, "InstanceTypes"},
		{"bad type", func(b *Bundle) { b.InstanceTypes = []string{"t3.small", "t3.small\n"} }, "InstanceTypes[1]"},
		{"short region", func(b *Bundle) { b.Region = "eu-west" }, "Region"},
		{"bad AMI", func(b *Bundle) { b.AMI = "ami-123" }, "AMI"},
		{"bad replaces", func(b *Bundle) { b.ReplacesAMI = "ami-xyz" }, "ReplacesAMI"},
		{"bad key ID", func(b *Bundle) { b.AccessKeyID = "akia" }, "AccessKeyID"},
		{"bad secret", func(b *Bundle) { b.SecretAccessKey = config.NewSecret(`x"); import os #`) }, "SecretAccessKey"},
		{"bad key pair", func(b *Bundle) { b.KeyPairName = "k'ey" }, "KeyPairName"},
		{"bad sg", func(b *Bundle) { b.SecurityGroupID = "default" }, "SecurityGroupID"},
		{"bad subnet", func(b *Bundle) { b.SubnetID = "subnet-x" }, "SubnetID"},
		{"bad profile", func(b *Bundle) { b.InstanceProfileName = "a/b" }, "InstanceProfileName"},
		{"aws tag", func(b *Bundle) { b.Tags = map[string]string{"aws:x": "v"} }, "Tags key"},
		{"quote in tag", func(b *Bundle) { b.Tags = map[string]string{"k": `v"}`} }, "Tags[k]"},
		{"line separator in tag", func(b *Bundle) { b.Tags = map[string]string{"k": "a\u2028b"} }, "Tags[k]"},
		{"negative keepalive", func(b *Bundle) { b.KeepaliveInterval = -1 }, "KeepaliveInterval"},
		{"fractional wait", func(b *Bundle) { b.BuildWaitTimeout = 1500 * time.Millisecond }, "BuildWaitTimeout"},
		{"relative dir", func(b *Bundle) { b.SecretsDir = "secrets" }, "SecretsDir"},
		{"quote in dir", func(b *Bundle) { b.SecretsDir = "/a\nb" }, "SecretsDir"},
		{"same AMI", func(b *Bundle) { b.Changes.OldAMI = b.AMI }, "Changes.OldAMI"},
		{"rotated without secret", func(b *Bundle) {
			b.Changes.OldAccessKeyID = "AKIAI44QH8DHBEXAMPLE"
			b.SecretAccessKey = config.Secret{}
		}, "SecretAccessKey"},
	}
	for _, c := range cases {
		b := fixture()
		c.edit(&b)
		err := b.Validate()
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: Validate() = %v; want nil", c.name, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) {
			t.Errorf("%s: Validate() = %v; want a *FieldError wrapped with ErrInvalid", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.field+" = ") {
			t.Errorf("%s: Validate() = %v; want a problem with field %s", c.name, err, c.field)
		}
		for _, render := range []func(Bundle) error{
			func(b Bundle) error { _, err := MasterCfgSnippet(b); return err },
			func(b Bundle) error { _, err := Text(b, TextOptions{}); return err },
			func(b Bundle) error { _, err := JSON(b, false); return err },
		} {
			if err := render(b); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: rendering = %v; want ErrInvalid", c.name, err)
			}
		}
	}
}

// python3 returns Debian's python3, which the master uses (the python3 on
// PATH may be a pyenv one); without it the test is skipped, or fails when
// CI=true.
func python3(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required when CI=true: %v", py, err)
		}
		t.Skipf("%s not available: %v", py, err)
	}
	return py
}

// TestPyString checks with Python itself that every literal evaluates to
// the string it was made from.
func TestPyString(t *testing.T) {
	py := python3(t)
	inputs := []string{
		"", "plain", `"`, `\`, `'`, `"""`, "a\nb", "\r", "\x00", "\x7f", "é", "Zoë Müller",
		"\u2028", "𝄞", `"); import os; os.system("id") #`, "\\x41", "{}", "${x}", "\ufeff",
	}
	var src strings.Builder
	src.WriteString("import sys\nvals = [\n")
	for _, s := range inputs {
		lit := pyString(s)
		for _, r := range lit {
			if r < 0x20 || r > 0x7e {
				t.Errorf("pyString(%q) = %s; contains %U, want printable ASCII only", s, lit, r)
			}
		}
		fmt.Fprintf(&src, "    %s,\n", lit)
	}
	src.WriteString("]\nfor v in vals:\n    sys.stdout.buffer.write(v.encode('utf-8', 'surrogatepass') + b'\\xff')\n")
	cmd := exec.Command(py, "-c", src.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, src.String())
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\xff"), "\xff")
	if len(got) != len(inputs) {
		t.Fatalf("python3 printed %d values; want %d", len(got), len(inputs))
	}
	for i, s := range inputs {
		if got[i] != s {
			t.Errorf("python3 evaluates pyString(%q) to %q; want %q", s, got[i], s)
		}
	}
}

// TestSnippetCompiles compiles every golden snippet with Debian's python3
// and checks that the call names only EC2LatentWorker's parameters.
func TestSnippetCompiles(t *testing.T) {
	py := python3(t)
	const script = `
import ast, inspect, sys
from buildbot.worker.ec2 import EC2LatentWorker
from buildbot.worker.latent import AbstractLatentWorker
from buildbot.worker.base import AbstractWorker
params = set()
for cls in (EC2LatentWorker, AbstractLatentWorker, AbstractWorker):
    for f in (cls.__init__, getattr(cls, "checkConfig", cls.__init__)):
        params |= set(inspect.signature(f).parameters)
tree = ast.parse(sys.stdin.read())
calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
         and getattr(n.func, "attr", None) == "EC2LatentWorker"]
assert len(calls) == 1, calls
names = [str(k.arg) for k in calls[0].keywords]
# kwargs["x"] = ...: the worker class change's own keywords.
names += [n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
          and getattr(n.value, "id", None) == "kwargs" and isinstance(n.slice, ast.Constant)]
bad = [k for k in names if k != "None" and k not in params]
assert not bad, bad
print(" ".join(names))
`
	for _, b := range []Bundle{fixture(), refreshed(), rotated(), newest()} {
		snippet, err := MasterCfgSnippet(b)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(py, "-c", script)
		cmd.Stdin = strings.NewReader(snippet)
		out, err := cmd.CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "No module named 'buildbot'") && os.Getenv("CI") != "true" {
				t.Skip("Debian's python3-buildbot is not installed")
			}
			t.Fatalf("python3 on the snippet: %v\n%s\n%s", err, out, snippet)
		}
		image := "ami"
		if b.FindNewest {
			image = "valid_ami_owners valid_ami_location_regex"
		}
		want := "name password instance_type " + image + " region identifier secret_identifier keypair_name " +
			"security_group_ids subnet_id instance_profile_name tags keepalive_interval build_wait_timeout max_builds"
		if b.ParallelTests > 0 {
			want += " properties"
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("snippet keywords = %s; want %s", got, want)
		}
		// The worker class change's call too (its ** passes the class's own).
		class, err := WorkerClassChange(b)
		if err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(py, "-c", script)
		cmd.Stdin = strings.NewReader(class)
		out, err = cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python3 on the worker class change: %v\n%s\n%s", err, out, class)
		}
		const wantClass = "instance_type region identifier secret_identifier keypair_name " +
			"security_group_ids subnet_id instance_profile_name tags None " +
			"ami valid_ami_owners valid_ami_location_regex"
		if got := strings.TrimSpace(string(out)); got != wantClass {
			t.Errorf("worker class change keywords = %s; want %s", got, wantClass)
		}
	}
}
