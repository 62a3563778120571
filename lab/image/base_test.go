package image

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLockFile: a second taker waits (and says so) while the lock is held,
// gives up when its context ends, and gets the lock once it is released.
func TestLockFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".base.lock")
	unlock, err := lockFile(context.Background(), path, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path, &log); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lockFile while held = %v; want %v", err, context.DeadlineExceeded)
	}
	if !strings.Contains(log.String(), "waiting") {
		t.Errorf("a waiting lockFile logged %q; want it to say it waits", log.String())
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		unlock()
	}()
	unlock2, err := lockFile(context.Background(), path, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("lockFile after release: %v", err)
	}
	unlock2()
}
