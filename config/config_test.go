package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/scripts"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from its golden file (go test -update refreshes it)\ngot:\n%s", name, got)
	}
}

// writeFile writes content to dir/name with mode and returns the path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// valid returns a Default with the required fields filled in.
func valid() *Config {
	c := Default()
	c.Worker.Name = "aws-debian-x86"
	c.Worker.AdminName = "Jane Doe"
	c.Worker.AdminEmail = "jane@example.org"
	return c
}

// fieldKeys returns the Key of every *FieldError joined in err, and the
// errors that are not FieldErrors.
func fieldKeys(err error) (keys []string, other []error) {
	if err == nil {
		return nil, nil
	}
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			keys = append(keys, fe.Field)
		} else {
			other = append(other, e)
		}
	}
	return keys, other
}

func TestDefaultNeedsOnlyTheRequiredKeys(t *testing.T) {
	keys, other := fieldKeys(Default().Validate())
	want := []string{"worker.name", "worker.admin_name", "worker.admin_email"}
	if !slices.Equal(keys, want) || other != nil {
		t.Errorf("Default().Validate() names %q and %v; want %q", keys, other, want)
	}
	var required []string
	for _, k := range Keys() {
		if k.Required {
			required = append(required, k.Name)
		}
	}
	if !slices.Equal(required, want) {
		t.Errorf("required keys = %q; want %q", required, want)
	}
	if err := valid().Validate(); err != nil {
		t.Errorf("valid().Validate() = %v; want nil", err)
	}
}

func TestLoad(t *testing.T) {
	const secret = "hunter2-s3cret"
	for _, tc := range []struct {
		desc    string
		file    string
		errs    []string // substrings the error must contain; nil = no error
		check   func(*testing.T, *Config)
		noValue string // a string the error must not contain
	}{
		{desc: "empty file is the default", file: "", check: func(t *testing.T, c *Config) {
			d := Default()
			if !reflect.DeepEqual(c.Worker, d.Worker) || !reflect.DeepEqual(c.AWS, d.AWS) || !reflect.DeepEqual(c.Image, d.Image) {
				t.Errorf("Load(empty) = %+v; want %+v", c, d)
			}
		}},
		{desc: "values", file: `
[worker]
name = "w1"
master = "master.example.org:9989"
[aws]
region = "eu-west-3"
tags = { team = "py", "cost center" = "12" }
[image]
platform = "ubuntu"
root_volume_gib = 64
cpython_build_deps = true
`, check: func(t *testing.T, c *Config) {
			if c.Worker.Name != "w1" || c.Worker.Master != "master.example.org:9989" || c.AWS.Region != "eu-west-3" ||
				c.Image.Platform != "ubuntu" || c.Image.RootVolumeGiB != 64 || !c.Image.CPythonBuildDeps {
				t.Errorf("Load = %+v", c)
			}
			if c.AWS.InstanceType != DefaultInstanceType || c.Worker.PasswordEnv != DefaultPasswordEnv {
				t.Errorf("Load lost defaults: %+v", c)
			}
			if want := map[string]string{"team": "py", "cost center": "12"}; !reflect.DeepEqual(c.AWS.Tags, want) {
				t.Errorf("tags = %v; want %v", c.AWS.Tags, want)
			}
		}},
		{desc: "tags table", file: "[aws.tags]\nteam = \"py\"\n", check: func(t *testing.T, c *Config) {
			if c.AWS.Tags["team"] != "py" {
				t.Errorf("tags = %v", c.AWS.Tags)
			}
		}},
		{desc: "relative paths", file: "[worker]\npassword_file = \"pw\"\n[image]\nextra_scripts = [\"a.sh\", \"/abs/b.sh\"]\n",
			check: func(t *testing.T, c *Config) {
				dir := c.origins["worker.password_file"].name
				dir = filepath.Dir(dir)
				if c.Worker.PasswordFile != filepath.Join(dir, "pw") {
					t.Errorf("password_file = %q; want it in %q", c.Worker.PasswordFile, dir)
				}
				if want := []string{filepath.Join(dir, "a.sh"), "/abs/b.sh"}; !slices.Equal(c.Image.ExtraScripts, want) {
					t.Errorf("extra_scripts = %q; want %q", c.Image.ExtraScripts, want)
				}
			}},
		{desc: "unknown key suggests", file: "[worker]\nnmae = \"w\"\n", errs: []string{`unknown key "worker.nmae"`, `did you mean "worker.name"`}},
		{desc: "key in wrong section", file: "[aws]\nplatform = \"debian\"\n", errs: []string{`"aws.platform"`, `did you mean "image.platform"`}},
		{desc: "misspelt table", file: "[imagee]\nplatform = \"debian\"\n", errs: []string{`unknown key "imagee" (did you mean "image"?)`}},
		{desc: "unknown table once", file: "[extras]\na = 1\nb = 2\n", errs: []string{`unknown key "extras"`}, noValue: "extras.a"},
		{desc: "unknown top-level", file: "region = \"us-east-1\"\n", errs: []string{`unknown key "region"`, `"aws.region"`}},
		{desc: "several unknown", file: "[aws]\nregoin = \"x\"\n[image]\nbase = \"y\"\n", errs: []string{`"aws.regoin"`, `"image.base"`}},
		{desc: "wrong type names key", file: "[image]\nroot_volume_gib = \"30\"\n", errs: []string{"image.root_volume_gib"}},
		{desc: "inline password", file: "[worker]\nname = \"w\"\npassword = \"" + secret + "\"\n",
			errs: []string{"line 3", "worker.password", "never kept in the config file", "password_env"}, noValue: secret},
		{desc: "unquoted password", file: "[worker]\npassword = " + secret + "\n",
			errs: []string{"worker.password", "never kept"}, noValue: secret},
		{desc: "dotted password", file: "worker.password = \"" + secret + "\"\n", errs: []string{"password", "never kept"}, noValue: secret},
		{desc: "passwd", file: "[worker]\n  \"passwd\"= '" + secret + "'\n", errs: []string{"worker.passwd", "never kept"}, noValue: secret},
		{desc: "password in inline table", file: "worker = { name = \"w\", password = \"" + secret + "\" }\n",
			errs: []string{"worker.password", "never kept"}, noValue: secret},
		{desc: "syntax error", file: "[worker\nname = 1\n", errs: []string{"toml: line 2"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "latentworker.toml", tc.file, 0o644)
			c, err := Load(path)
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("Load(%q) = %v; want no error", tc.file, err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Load(%q) = %+v, nil; want an error", tc.file, c)
			}
			for _, s := range tc.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Load(%q) = %v; want it to contain %q", tc.file, err, s)
				}
			}
			if tc.noValue != "" && strings.Contains(err.Error(), tc.noValue) {
				t.Errorf("Load(%q) = %v; must not contain %q", tc.file, err, tc.noValue)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Load(%q) = %v; want it to name the file", tc.file, err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want ErrNotExist", err)
	}
}

func TestEffective(t *testing.T) {
	for _, tc := range []struct {
		image             Image
		owner, name, user string
	}{
		{Image{Platform: "debian"}, "136693071363", "debian-12-amd64-*", "admin"},
		{Image{Platform: "debian-13"}, "136693071363", "debian-13-amd64-*", "admin"},
		{Image{Platform: "ubuntu"}, "099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", "ubuntu"},
		{Image{Platform: "ubuntu", BaseName: "mine-*", SSHUser: "ec2-user"}, "099720109477", "mine-*", "ec2-user"},
		{Image{Platform: "debian", BaseOwner: "self"}, "self", "debian-12-amd64-*", "admin"},
	} {
		owner, name := tc.image.EffectiveBase()
		if owner != tc.owner || name != tc.name {
			t.Errorf("%+v.EffectiveBase() = %q, %q; want %q, %q", tc.image, owner, name, tc.owner, tc.name)
		}
		if got := tc.image.EffectiveSSHUser(); got != tc.user {
			t.Errorf("%+v.EffectiveSSHUser() = %q; want %q", tc.image, got, tc.user)
		}
	}
}

func TestDefaultHostInfo(t *testing.T) {
	for _, tc := range []struct {
		os, itype, want string
	}{
		{"Debian GNU/Linux 12 (bookworm)", "t3.large", "Debian GNU/Linux 12 (bookworm) on an AWS EC2 t3.large (latent worker)"},
		{"", "m7i.xlarge", "Linux on an AWS EC2 m7i.xlarge (latent worker)"},
		{" Ubuntu\t24.04\nLTS\x1b[31m ", "t3.large", "Ubuntu 24.04 LTS [31m on an AWS EC2 t3.large (latent worker)"},
		{"\u202e", "t3.large", "Linux on an AWS EC2 t3.large (latent worker)"},
	} {
		if got := DefaultHostInfo(tc.os, tc.itype); got != tc.want {
			t.Errorf("DefaultHostInfo(%q, %q) = %q; want %q", tc.os, tc.itype, got, tc.want)
		}
	}
	c := valid()
	w := c.ScriptWorker(strings.Repeat("x", 5000))
	if err := w.Validate(); err != nil {
		t.Errorf("ScriptWorker(long OS).Validate() = %v; want nil", err)
	}
	c.Worker.HostInfo = "my own"
	if got := c.ScriptWorker("Debian").HostInfo; got != "my own" {
		t.Errorf("ScriptWorker with host_info = %q; want %q", got, "my own")
	}
	if got := scripts.ObfuscateEmail(c.ScriptWorker("").AdminEmail); got != "jane AT example.org" {
		t.Errorf("obfuscated admin email = %q", got)
	}
}
