package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestLock: a second taker waits (and says so, once) while the lock is
// held, gives up when its context ends, and gets the lock once it is
// released.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".base.lock")
	unlock, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	said := 0
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path, func() { said++ }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while held = %v; want %v", err, context.DeadlineExceeded)
	}
	if said != 1 {
		t.Errorf("a waiting Lock called waiting %d times; want once", said)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		unlock()
	}()
	unlock2, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	unlock2()
}
