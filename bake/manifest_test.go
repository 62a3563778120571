package bake

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUnwriteManifest: a failed run removes the manifest it wrote, and
// nothing else at that path: not a file it never wrote, not a device or a
// FIFO (a path like /dev/null must survive a failed run).
func TestUnwriteManifest(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	older := filepath.Join(dir, "older.json")
	written := filepath.Join(dir, "written.json")
	for _, p := range []string{older, written} {
		if err := os.WriteFile(p, []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		path      string
		wrote     bool
		wantThere bool
	}{
		{older, false, true},
		{written, true, false},
		{fifo, true, true},
	}
	for _, tt := range tests {
		s := &State{opts: Options{ManifestPath: tt.path}, manifestWritten: tt.wrote}
		s.unwriteManifest()
		_, err := os.Lstat(tt.path)
		if there := err == nil; there != tt.wantThere {
			t.Errorf("unwriteManifest(%s, written %v): still there = %v; want %v", filepath.Base(tt.path), tt.wrote, there, tt.wantThere)
		}
	}
}
