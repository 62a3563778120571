package machine

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSystemdInit: a root whose /sbin/init links to systemd boots systemd
// (usrmerged or not); sysvinit's /sbin/init is a program of its own, and a
// root without one is not systemd either.
func TestSystemdInit(t *testing.T) {
	link := func(target string) string {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "sbin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, "sbin/init")); err != nil {
			t.Fatal(err)
		}
		return root
	}
	sysv := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysv, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sysv, "sbin/init"), []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		root string
		want bool
	}{
		{link("/lib/systemd/systemd"), true},
		{link("../lib/systemd/systemd"), true},
		{sysv, false},
		{link("/bin/busybox"), false},
		{t.TempDir(), false},
	} {
		if got := systemdInit(tc.root); got != tc.want {
			t.Errorf("systemdInit(%s) = %v; want %v", tc.root, got, tc.want)
		}
	}
}
