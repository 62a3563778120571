package master

import (
	"context"
	"os"
	"testing"
	"time"
)

// DefaultCacheDir is the lab's cache directory (lab.DefaultCacheDir),
// where tests find the pip flavour's root filesystem and venvs unless
// LATENTLAB_CACHE says otherwise.
const DefaultCacheDir = "/var/cache/latentlab"

// RequirePipFlavour returns the pip flavour of buildbot version for a test,
// building its root filesystem and venv in the lab's cache directory the
// first time. It skips the test when not root, and fails instead when
// CI=true.
func RequirePipFlavour(t testing.TB, version string) Flavour {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the pip master needs root (CI=true: not skipping)")
		}
		t.Skip("the pip master needs root")
	}
	cache := os.Getenv("LATENTLAB_CACHE")
	if cache == "" {
		cache = DefaultCacheDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	root, err := PipRoot(ctx, cache, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := EnsurePip(ctx, cache, root, version, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s ready in %v", f.Name, time.Since(t0).Round(time.Millisecond))
	return f
}
