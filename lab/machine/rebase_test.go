package machine

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCopyOver: a kept file is copied with its mode, and the parent
// directories it needs are made with their source's modes.
func TestCopyOver(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "etc/ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "etc"), 0o751); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc/ssh/key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"etc/ssh/key", "etc/missing"} {
		if err := copyOver(src, dst, rel); err != nil {
			t.Fatalf("copyOver %s: %v", rel, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dst, "etc/ssh/key"))
	if err != nil || string(b) != "secret" {
		t.Fatalf("copied key: %q, %v", b, err)
	}
	for rel, want := range map[string]os.FileMode{"etc": 0o751, "etc/ssh": 0o755, "etc/ssh/key": 0o600} {
		fi, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want mode %v", rel, fi, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dst, "etc/missing")); !os.IsNotExist(err) {
		t.Errorf("a path not in the source was made: %v", err)
	}
}
