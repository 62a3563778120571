package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadRefusesNonRegular: a FIFO, a device, a directory or a huge file
// is refused at once, naming the path, without reading it.
func TestLoadRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "must be a regular file, not a FIFO"},
		{"/dev/zero", "must be a regular file, not a device"},
		{dir, "must be a regular file, not a directory"},
		{big, "at most 1048576 are allowed"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(tc.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load(%s) = %v; want %q", tc.path, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Load(%s) hangs", tc.path)
		}
	}
}

func TestLoadRefusesWrongTypes(t *testing.T) {
	for _, tc := range []struct{ toml, key, want string }{
		{"[aws]\ntags = \"team=x\"\n", "aws.tags", "must be a table"},
		{"[image]\nextra_scripts = \"a.sh\"\n", "image.extra_scripts", "incompatible types"},
		{"[image]\nroot_volume_gib = \"30\"\n", "image.root_volume_gib", "integer"},
		{"[image]\ncpython_build_deps = \"yes\"\n", "image.cpython_build_deps", "boolean"},
	} {
		path := filepath.Join(t.TempDir(), "lw.toml")
		if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) = %v; want an error naming %s: %s", tc.toml, err, tc.key, tc.want)
		}
	}
}

func TestPasswordChecks(t *testing.T) {
	c := Default()
	c.Worker.PasswordEnv = "LW_TEST_PASSWORD"
	for _, tc := range []struct{ pw, want string }{
		{"ok-password", ""},
		{"bad\xffutf8", "valid UTF-8"},
		{strings.Repeat("x", MaxPasswordLen+1), "at most 256"},
		{"tab\there", "control characters"},
	} {
		t.Setenv("LW_TEST_PASSWORD", tc.pw)
		_, err := c.Password(nil)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Password(%.20q...) = %v; want %q", tc.pw, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), tc.pw) {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	// A 10 MB password file is refused without reading it all.
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, make([]byte, 10<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Worker.PasswordEnv, c.Worker.PasswordFile = "", path
	if _, err := c.Password(nil); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("Password(10 MB file) = %v; want a size error", err)
	}
}
