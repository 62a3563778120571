package cpythonsrc

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidSig(t *testing.T) {
	status := "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG A821E680E5FA6305 Thomas Wouters <thomas@python.org>\n" +
		"[GNUPG:] VALIDSIG 7169605F62C751356D054A26A821E680E5FA6305 2025-06-11 1749663954 0 4 0 1 10 00 7169605F62C751356D054A26A821E680E5FA6305\n"
	fpr, when, err := validSig([]byte(status))
	if err != nil || fpr != SigningKey || !when.Equal(time.Unix(1749663954, 0)) {
		t.Errorf("validSig = %q, %v, %v; want %s at 1749663954", fpr, when, err, SigningKey)
	}
	if _, _, err := validSig([]byte("[GNUPG:] BADSIG A821E680E5FA6305 x\n")); err == nil {
		t.Errorf("validSig(BADSIG) = nil error")
	}
}

// TestEnsureAndServe makes (or finds) the lab's repository in the lab's
// cache, as latentlab up does, and clones it over HTTP as an instance
// does: the release's tree on its branch, with its tag; a push is refused.
func TestEnsureAndServe(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads CPython's source from Debian's archive on first use")
	}
	cache := os.Getenv("LATENTLAB_CACHE")
	if cache == "" {
		cache = "/var/cache/latentlab" // the lab's default (package lab imports this one)
	}
	if os.Geteuid() != 0 {
		msg := "needs root (the lab's cache)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	r, err := Ensure(ctx, cache, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Ensure: %s in %v\n%s", r.Dir, time.Since(t0).Round(time.Millisecond), r.Source)
	if r.Branch != "3.13" || r.Tag != "v"+r.Version || !strings.HasPrefix(r.Version, "3.13.") {
		t.Errorf("repo %+v; want CPython 3.13's branch and tag", r)
	}
	h, err := Handler(Root(cache))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "cpython")
	t1 := time.Now()
	if out, err := exec.Command("git", "clone", "-q", "--filter=blob:none", "--branch", r.Branch, srv.URL+"/"+RepoName, dst).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	t.Logf("clone over HTTP: %v", time.Since(t1).Round(time.Millisecond))
	for _, f := range []string{"configure", "Lib/test/test_socket.py", "Lib/test/test_asyncio/__init__.py", "Modules/_ssl.c"} {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			t.Errorf("the clone lacks %s", f)
		}
	}
	if out, err := exec.Command("git", "-C", dst, "describe", "--tags").Output(); err != nil || strings.TrimSpace(string(out)) != r.Tag {
		t.Errorf("git describe = %q, %v; want %s", out, err, r.Tag)
	}
	if out, err := exec.Command("git", "-C", dst, "push", "-q", "origin", "HEAD:refs/heads/evil").CombinedOutput(); err == nil {
		t.Errorf("a push to the lab's repository succeeded: %s", out)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
