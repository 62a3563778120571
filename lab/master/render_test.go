package master

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// ec2Extra is the kind of snippet the lab inserts: an EC2LatentWorker as
// handed off, with AWSEndpoint pointing boto3 at the lab.
const ec2Extra = `c['workers'].append(worker.EC2LatentWorker(
    'latent-1', util.Secret('latent-1-password'),
    instance_type='t3.micro',
    ami='ami-12345678',
    region='us-east-1',
))
`

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		golden string
		cfg    Config
	}{
		{"plain.cfg", Config{
			PBPort:  9989,
			WWWPort: 8010,
			Workers: []Worker{{Name: "w1", Password: "pw1"}, {Name: "w_2-b", Password: `it's "quoted" \ and ünïcode`}},
		}},
		{"extra.cfg", Config{
			Host:             "127.0.0.5",
			PBPort:           19989,
			WWWPort:          18010,
			Workers:          []Worker{{Name: "plain", Password: "plain-pw"}},
			Extra:            ec2Extra,
			ExtraWorkerNames: []string{"latent-1"},
			AWSEndpoint:      "http://127.0.0.1:4570",
			Secrets:          map[string]string{"latent-1-password": "latent-pw"},
			BuilderName:      "AMD64 Debian latent 3.x",
			SchedulerName:    "force-latent",
		}},
		{"cpython.cfg", Config{
			PBPort:  9989,
			WWWPort: 8010,
			Workers: []Worker{{Name: "w1", Password: "pw1", ParallelTests: 4}, {Name: "w2", Password: "pw2"}},
			CPython: &CPythonBuilder{Repo: "http://127.0.0.1:4573/cpython.git", Branch: "3.13"},
		}},
		{"extra-only.cfg", Config{
			PBPort:           9989,
			WWWPort:          8010,
			Extra:            "c['workers'].append(worker.Worker('x', 'y'))",
			ExtraWorkerNames: []string{"x"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := Render(tt.cfg)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render() differs from %s (go test -update to refresh):\n%s", path, got)
			}
			checkPython(t, got)
		})
	}
}

// checkPython compiles cfg with the system Python, if there is one, so a
// quoting mistake shows up here rather than in a master's log.
func checkPython(t *testing.T, cfg []byte) {
	t.Helper()
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Log("no /usr/bin/python3; not compiling master.cfg")
		return
	}
	cmd := exec.Command(py, "-c", "import sys; compile(sys.stdin.read(), 'master.cfg', 'exec')")
	cmd.Stdin = bytes.NewReader(cfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("master.cfg does not compile: %v\n%s", err, out)
	}
}

// TestPyStr checks that pyStr's literals mean the original string to
// Python.
func TestPyStr(t *testing.T) {
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("no /usr/bin/python3")
	}
	inputs := []string{
		"", "plain", `it's`, `"double"`, `back\slash`, "new\nline", "tab\t", "nul\x00",
		"ünïcode €", "emoji 🐍", "\u2028\u2029", "<script>&amp;", `'''`, `"""`, `\N{BULLET}`, "{x}",
		"${HOME} $(id)",
	}
	var src strings.Builder
	src.WriteString("import json, sys\nvals = [\n")
	for _, s := range inputs {
		src.WriteString("    " + pyStr(s) + ",\n")
	}
	src.WriteString("]\nsys.stdout.write(json.dumps(vals))\n")
	cmd := exec.Command(py, "-c", src.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, src.String())
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	for i, s := range inputs {
		if got[i] != s {
			t.Errorf("pyStr(%q) means %q to Python; want %q", s, got[i], s)
		}
	}
}

func TestRenderInvalid(t *testing.T) {
	ok := Config{PBPort: 9989, WWWPort: 8010, Workers: []Worker{{Name: "w1", Password: "pw"}}}
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error
	}{
		{"ok", func(*Config) {}, ""},
		{"public host", func(c *Config) { c.Host = "0.0.0.0" }, "loopback"},
		{"lan host", func(c *Config) { c.Host = "192.168.1.1" }, "loopback"},
		{"ipv6", func(c *Config) { c.Host = "::1" }, "IPv4"},
		{"hostname", func(c *Config) { c.Host = "localhost" }, "loopback"},
		{"other loopback", func(c *Config) { c.Host = "127.0.0.9" }, ""},
		{"no ports", func(c *Config) { c.PBPort, c.WWWPort = 0, 0 }, "ports must be set"},
		{"same ports", func(c *Config) { c.WWWPort = c.PBPort }, "both"},
		{"port range", func(c *Config) { c.PBPort = 70000 }, "out of range"},
		{"no workers", func(c *Config) { c.Workers = nil }, "no workers"},
		{"quote in name", func(c *Config) { c.Workers[0].Name = "w'1" }, "not an identifier"},
		{"dot in name", func(c *Config) { c.Workers[0].Name = "w.1" }, "not an identifier"},
		{"digit first", func(c *Config) { c.Workers[0].Name = "1w" }, "not an identifier"},
		{"long name", func(c *Config) { c.Workers[0].Name = strings.Repeat("w", 51) }, "longer than 50"},
		{"reserved name", func(c *Config) { c.Workers[0].Name = "debug" }, "reserved"},
		{"duplicate", func(c *Config) { c.ExtraWorkerNames = []string{"w1"} }, "used twice"},
		{"cpython test", func(c *Config) {
			c.CPython = &CPythonBuilder{Repo: "http://127.0.0.1:1/cpython.git", Branch: "3.13", Tests: []string{"test_socket", "-x"}}
		}, "regrtest name"},
		{"cpython repo", func(c *Config) { c.CPython = &CPythonBuilder{Branch: "3.13"} }, "must be set"},
		{"bad extra name", func(c *Config) { c.ExtraWorkerNames = []string{"a b"} }, "not an identifier"},
		{"empty password", func(c *Config) { c.Workers[0].Password = "" }, "empty password"},
		{"non-UTF-8 password", func(c *Config) { c.Workers[0].Password = "\xff" }, "UTF-8"},
		{"scheduler", func(c *Config) { c.SchedulerName = "force now" }, "scheduler name"},
		{"builder underscore", func(c *Config) { c.BuilderName = "_b" }, "builder name"},
		{"builder newline", func(c *Config) { c.BuilderName = "b\n" }, "builder name"},
		{"endpoint", func(c *Config) { c.AWSEndpoint = "http://127.0.0.1:4570" }, ""},
		{"remote endpoint", func(c *Config) { c.AWSEndpoint = "https://ec2.us-east-1.amazonaws.com" }, "AWS endpoint"},
		{"endpoint hostname", func(c *Config) { c.AWSEndpoint = "http://localhost:4570" }, "AWS endpoint"},
		{"endpoint quote", func(c *Config) { c.AWSEndpoint = "http://127.0.0.1:4570/'" }, "AWS endpoint"},
		{"secret", func(c *Config) { c.Secrets = map[string]string{"w1-password": "x"} }, ""},
		{"secret path", func(c *Config) { c.Secrets = map[string]string{"../x": "x"} }, "secret name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			cfg.Workers = append([]Worker(nil), ok.Workers...)
			tt.edit(&cfg)
			_, err := Render(cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Render(%+v) = %v; want no error", cfg, err)
			case tt.want != "" && err == nil:
				t.Errorf("Render(%+v) = nil error; want one containing %q", cfg, tt.want)
			case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig)):
				t.Errorf("Render(%+v) = %v; want ErrInvalidConfig containing %q", cfg, err, tt.want)
			}
		})
	}
}

// TestRenderKeepsPasswordsOutOfErrors checks that validation errors never
// quote a password.
func TestRenderKeepsPasswordsOutOfErrors(t *testing.T) {
	const secret = "s3cret\xff"
	_, err := Render(Config{PBPort: 1, WWWPort: 2, Workers: []Worker{{Name: "w1", Password: secret}}})
	if err == nil {
		t.Fatal("Render accepted a non-UTF-8 password")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q contains the password", err)
	}
}

func TestMasterEnv(t *testing.T) {
	got := masterEnv(
		[]string{"PATH=/bin", "PYTHONPATH=/pyenv/lib", "PYTHONHOME=/pyenv", "HOME=/root"},
		[]string{"AWS_ACCESS_KEY_ID=test", "PYTHONPATH=/extra"},
		"/m/pylib")
	want := []string{"PATH=/bin", "HOME=/root", "AWS_ACCESS_KEY_ID=test", "PYTHONPATH=/m/pylib:/extra", "PYTHONUNBUFFERED=1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("masterEnv() = %q; want %q", got, want)
	}
}
