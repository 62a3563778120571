package pypicache

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMirror serves an index and a file through the mirror from a local
// upstream, then again with the upstream gone (from the cache).
func TestMirror(t *testing.T) {
	var indexHits, fileHits atomic.Int64
	var filesURL string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/simple/buildbot-worker/":
			indexHits.Add(1)
			io.WriteString(w, `<a href="`+filesURL+`packages/ab/cd/buildbot_worker-4.3.0-py3-none-any.whl#sha256=00">buildbot_worker-4.3.0-py3-none-any.whl</a>`)
		case "/files/packages/ab/cd/buildbot_worker-4.3.0-py3-none-any.whl":
			fileHits.Add(1)
			io.WriteString(w, "wheel bytes")
		default:
			http.NotFound(w, r)
		}
	}))
	filesURL = up.URL + "/files/"
	c, err := New(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetUpstreams(up.URL+"/simple/", filesURL)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	get := func(p string) (int, string) {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for round := 0; round < 2; round++ {
		code, body := get("/simple/Buildbot_Worker/")
		if code != 200 || !strings.Contains(body, `href="/files/packages/ab/cd/buildbot_worker-4.3.0-py3-none-any.whl#sha256=00"`) {
			t.Fatalf("round %d: index = %d %q; want the link rewritten to /files/", round, code, body)
		}
		if code, body := get("/files/packages/ab/cd/buildbot_worker-4.3.0-py3-none-any.whl"); code != 200 || body != "wheel bytes" {
			t.Fatalf("round %d: file = %d %q", round, code, body)
		}
		if round == 0 {
			up.Close()
			c.fresh = time.Nanosecond // the index must be fetched again, and is served stale
		}
	}
	if indexHits.Load() != 1 || fileHits.Load() != 1 {
		t.Errorf("upstream saw %d index and %d file requests; want 1 each", indexHits.Load(), fileHits.Load())
	}
	for _, p := range []string{"/simple/../etc/passwd", "/files/../x", "/other", "/simple/a%2Fb/"} {
		if code, _ := get(p); code != 404 {
			t.Errorf("GET %s = %d; want 404", p, code)
		}
	}
	if got := PipConf("127.0.0.1:4572"); !strings.Contains(got, "index-url = http://127.0.0.1:4572/simple/\n") || !strings.Contains(got, "trusted-host = 127.0.0.1:4572\n") {
		t.Errorf("PipConf = %q", got)
	}
	if _, err := Listen("0.0.0.0:0"); err == nil {
		t.Errorf("Listen(0.0.0.0:0) = nil error; want loopback only")
	}
}
