package aptcache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a fake Debian mirror: a real HTTP peer on loopback that
// records every request it gets.
type upstream struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	files map[string]upFile
	reqs  []string // "METHOD /path cond" where cond is If-None-Match|If-Modified-Since
}

type upFile struct {
	body []byte
	mod  time.Time
	etag string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{t: t, files: map[string]upFile{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) host() string { return u.srv.Listener.Addr().String() }

func (u *upstream) put(p string, body []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := len(u.files)
	u.files[p] = upFile{body: body, mod: time.Date(2026, 1, 1, 0, n, 0, 0, time.UTC), etag: fmt.Sprintf(`"%x-%d"`, len(body), n)}
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.reqs...)
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.reqs = append(u.reqs, r.Method+" "+r.URL.Path+" "+r.Header.Get("If-None-Match")+"|"+r.Header.Get("If-Modified-Since"))
	f, ok := u.files[r.URL.Path]
	u.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/debian/pool/main/c/cut/") {
		// Promise 1 MiB, send less, hang up.
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			u.t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		sent := 100
		if strings.Contains(r.URL.Path, "big") {
			sent = 300 << 10 // enough for the proxy to have sent its headers
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/vnd.debian.binary-package\r\n\r\n%s", 1<<20, bytes.Repeat([]byte("x"), sent))
		bw.Flush()
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", f.etag)
	http.ServeContent(w, r, "", f.mod, bytes.NewReader(f.body))
}

// clock is the cache's injected time.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// setup returns a cache allowing only u, served on loopback, and a client
// that uses it as its proxy, as apt would.
func setup(t *testing.T, u *upstream) (*Cache, *http.Client, *clock) {
	t.Helper()
	c, err := New(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	c.now = clk.now
	if u != nil {
		c.Allow(u.host())
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: c}}
	srv.Start()
	t.Cleanup(srv.Close)
	pu, _ := url.Parse(srv.URL)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return c, &http.Client{Transport: tr}, clk
}

// proxyAddr is the address of the proxy cl uses.
func proxyAddr(t *testing.T, cl *http.Client) string {
	t.Helper()
	pu, err := cl.Transport.(*http.Transport).Proxy(&http.Request{URL: &url.URL{Scheme: "http", Host: "x"}})
	if err != nil || pu == nil {
		t.Fatalf("client has no proxy: %v", err)
	}
	return pu.Host
}

type result struct {
	status int
	body   []byte
	xcache string
	hdr    http.Header
}

func do(t *testing.T, cl *http.Client, method, u string, hdr ...string) result {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return result{resp.StatusCode, b, resp.Header.Get("X-Cache"), resp.Header}
}

const debPath = "/debian/pool/main/b/buildbot/buildbot-worker_3.7.0-2_all.deb"

func TestDebMissThenHit(t *testing.T) {
	u := newUpstream(t)
	deb := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	u.put(debPath, deb)
	c, cl, _ := setup(t, u)
	url := "http://" + u.host() + debPath

	r := do(t, cl, "GET", url)
	if r.status != 200 || r.xcache != "MISS" || !bytes.Equal(r.body, deb) {
		t.Fatalf("first GET = %d %q, %d bytes; want 200 MISS, %d bytes", r.status, r.xcache, len(r.body), len(deb))
	}
	r = do(t, cl, "GET", url)
	if r.status != 200 || r.xcache != "HIT" || !bytes.Equal(r.body, deb) {
		t.Fatalf("second GET = %d %q, %d bytes; want 200 HIT, identical bytes", r.status, r.xcache, len(r.body))
	}
	r = do(t, cl, "HEAD", url)
	if r.status != 200 || r.xcache != "HIT" || r.hdr.Get("Content-Length") != fmt.Sprint(len(deb)) {
		t.Fatalf("HEAD = %d %q Content-Length %s; want 200 HIT %d", r.status, r.xcache, r.hdr.Get("Content-Length"), len(deb))
	}
	r = do(t, cl, "GET", url, "Range", "bytes=16-31")
	if r.status != 206 || r.xcache != "HIT" || !bytes.Equal(r.body, deb[16:32]) {
		t.Fatalf("Range GET = %d %q %q; want 206 HIT %q", r.status, r.xcache, r.body, deb[16:32])
	}
	if got := u.requests(); len(got) != 1 {
		t.Errorf("upstream requests = %q; want just the first GET", got)
	}
	s := c.Stats()
	if s.Misses != 1 || s.Hits != 3 || s.BytesFromCache != int64(len(deb))+16 || s.BytesFromUpstream != int64(len(deb)) {
		t.Errorf("Stats() = %+v; want 1 miss, 3 hits, %d bytes from cache", s, len(deb)+16)
	}
	t.Log(s)
}

func TestIndexFreshnessAndRevalidation(t *testing.T) {
	u := newUpstream(t)
	const p = "/debian/dists/bookworm/InRelease"
	u.put(p, []byte("release one\n"))
	_, cl, clk := setup(t, u)
	url := "http://" + u.host() + p

	steps := []struct {
		name      string
		advance   time.Duration
		change    string
		want      string
		wantCache string
		wantReq   string // the upstream request this step makes; "" for none
	}{
		{"first", 0, "", "release one\n", "MISS", "GET " + p + " |"},
		{"fresh", 29 * time.Minute, "", "release one\n", "HIT", ""},
		{"stale, unchanged", 2 * time.Minute, "", "release one\n", "HIT", "GET " + p + ` "c-0"|Thu, 01 Jan 2026 00:00:00 GMT`},
		{"fresh again", 29 * time.Minute, "", "release one\n", "HIT", ""},
		{"stale, changed", 2 * time.Minute, "release two, longer\n", "release two, longer\n", "MISS", "GET " + p + ` "c-0"|Thu, 01 Jan 2026 00:00:00 GMT`},
		{"new copy cached", 0, "", "release two, longer\n", "HIT", ""},
	}
	for _, st := range steps {
		clk.advance(st.advance)
		if st.change != "" {
			u.put(p, []byte(st.change))
		}
		before := len(u.requests())
		r := do(t, cl, "GET", url)
		if r.status != 200 || string(r.body) != st.want || r.xcache != st.wantCache {
			t.Errorf("%s: GET = %d %q %q; want 200 %q %q", st.name, r.status, r.xcache, r.body, st.wantCache, st.want)
		}
		reqs := u.requests()[before:]
		switch {
		case st.wantReq == "" && len(reqs) != 0:
			t.Errorf("%s: upstream requests = %q; want none", st.name, reqs)
		case st.wantReq != "" && (len(reqs) != 1 || reqs[0] != st.wantReq):
			t.Errorf("%s: upstream requests = %q; want [%q]", st.name, reqs, st.wantReq)
		}
	}
	// Acquire::http::No-Cache makes apt send no-cache: revalidate though fresh.
	before := len(u.requests())
	if r := do(t, cl, "GET", url, "Cache-Control", "no-cache"); r.status != 200 || r.xcache != "HIT" {
		t.Errorf("no-cache GET = %d %q; want 200 HIT after a 304", r.status, r.xcache)
	}
	if reqs := u.requests()[before:]; len(reqs) != 1 || !strings.Contains(reqs[0], `"14-1"`) {
		t.Errorf("no-cache GET: upstream requests = %q; want one conditional GET", reqs)
	}
	// apt's own conditional request is answered by the cache.
	r := do(t, cl, "GET", url, "If-Modified-Since", "Thu, 01 Jan 2026 00:01:00 GMT")
	if r.status != 304 {
		t.Errorf("client If-Modified-Since: status %d; want 304", r.status)
	}
}

func TestUpstreamDownServesStale(t *testing.T) {
	u := newUpstream(t)
	const p = "/debian/dists/bookworm/main/binary-amd64/Packages.xz"
	u.put(p, []byte("packages"))
	c, cl, clk := setup(t, u)
	host := u.host()
	if r := do(t, cl, "GET", "http://"+host+p); r.status != 200 || r.xcache != "MISS" {
		t.Fatalf("first GET = %d %q; want 200 MISS", r.status, r.xcache)
	}
	u.srv.Close()
	clk.advance(time.Hour)
	r := do(t, cl, "GET", "http://"+host+p)
	if r.status != 200 || string(r.body) != "packages" {
		t.Errorf("GET with mirror down = %d %q; want 200 %q (stale)", r.status, r.body, "packages")
	}
	if s := c.Stats(); s.Stale != 1 {
		t.Errorf("Stats().Stale = %d; want 1", s.Stale)
	}
	if r := do(t, cl, "GET", "http://"+host+debPath); r.status != http.StatusBadGateway {
		t.Errorf("uncached .deb with mirror down: status %d; want 502", r.status)
	}
}

func TestCutBodyNotCached(t *testing.T) {
	u := newUpstream(t)
	c, cl, _ := setup(t, u)
	for i, name := range []string{"cut_1.0_all.deb", "cut_1.0_all.deb", "big_1.0_all.deb"} {
		url := "http://" + u.host() + "/debian/pool/main/c/cut/" + name
		// The error shows either before the headers (the proxy had not
		// flushed them yet) or while reading the body.
		resp, err := cl.Get(url)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("GET %d: read %d bytes without error; want an error for a cut transfer", i, len(b))
			}
		}
		t.Logf("GET %d: %v", i, err)
	}
	if got := u.requests(); len(got) != 3 {
		t.Errorf("upstream requests = %q; want 3 (nothing cached)", got)
	}
	var files []string
	filepath.WalkDir(c.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("cache files after cut transfers = %q; want none", files)
	}
}

func TestStatusPassedThroughNotCached(t *testing.T) {
	u := newUpstream(t)
	_, cl, _ := setup(t, u)
	url := "http://" + u.host() + "/debian/pool/main/n/nope/nope_1_all.deb"
	for range 2 {
		if r := do(t, cl, "GET", url); r.status != 404 {
			t.Errorf("GET missing = %d; want 404", r.status)
		}
	}
	if got := u.requests(); len(got) != 2 {
		t.Errorf("upstream requests = %q; want 2 (404 not cached)", got)
	}
}

func TestRangeMissPassedThrough(t *testing.T) {
	u := newUpstream(t)
	deb := []byte("a small package body")
	u.put(debPath, deb)
	_, cl, _ := setup(t, u)
	url := "http://" + u.host() + debPath
	if r := do(t, cl, "GET", url, "Range", "bytes=2-6"); r.status != 206 || string(r.body) != "small" {
		t.Fatalf("Range GET = %d %q; want 206 %q", r.status, r.body, "small")
	}
	if r := do(t, cl, "HEAD", url); r.status != 200 || r.xcache == "HIT" {
		t.Fatalf("HEAD = %d %q; want 200, not from cache", r.status, r.xcache)
	}
	if r := do(t, cl, "GET", url); r.xcache != "MISS" || !bytes.Equal(r.body, deb) {
		t.Errorf("GET after Range and HEAD = %q %q; want MISS (partials are not cached)", r.xcache, r.body)
	}
}

func TestRefusals(t *testing.T) {
	u := newUpstream(t)
	u.put(debPath, []byte("deb"))
	c, cl, _ := setup(t, nil) // default allow-list: the fake mirror is not on it
	tests := []struct {
		method, url string
		want        int
	}{
		{"GET", "http://" + u.host() + debPath, 403},
		{"GET", "http://example.com/debian/pool/x.deb", 403},
		{"GET", "http://deb.debian.org:8080/debian/pool/x.deb", 403},
		{"POST", "http://deb.debian.org/debian/pool/x.deb", 405},
	}
	for _, tt := range tests {
		if r := do(t, cl, tt.method, tt.url); r.status != tt.want {
			t.Errorf("%s %s = %d; want %d", tt.method, tt.url, r.status, tt.want)
		}
	}
	if got := u.requests(); len(got) != 0 {
		t.Errorf("upstream requests = %q; want none", got)
	}

	// CONNECT and origin-form requests, raw.
	for _, tt := range []struct {
		req  string
		want int
	}{
		{"CONNECT deb.debian.org:443 HTTP/1.1\r\nHost: deb.debian.org:443\r\n\r\n", 405},
		{"GET /debian/pool/x.deb HTTP/1.1\r\nHost: deb.debian.org\r\n\r\n", 400},
	} {
		conn, err := net.Dial("tcp", proxyAddr(t, cl))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, tt.req)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("%q: %v", tt.req, err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%q = %d; want %d", tt.req, resp.StatusCode, tt.want)
		}
	}
	if s := c.Stats(); s != (Stats{}) {
		t.Errorf("Stats() after refusals = %+v; want zero", s)
	}
}

func TestConcurrentSameFile(t *testing.T) {
	u := newUpstream(t)
	deb := bytes.Repeat([]byte("concurrent bytes "), 200<<10) // ~3.4 MB
	u.put(debPath, deb)
	c, cl, _ := setup(t, u)
	url := "http://" + u.host() + debPath

	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := cl.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(b, deb) {
				errs <- fmt.Errorf("GET: %d bytes, %v; want %d identical bytes", len(b), err, len(deb))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	before := len(u.requests())
	t.Logf("%d concurrent GETs made %d upstream requests", n, before)
	if r := do(t, cl, "GET", url); r.xcache != "HIT" || !bytes.Equal(r.body, deb) {
		t.Errorf("GET after concurrent fetches = %q, %d bytes; want HIT, identical", r.xcache, len(r.body))
	}
	if after := len(u.requests()); after != before {
		t.Errorf("upstream requests went from %d to %d; want the cache to answer", before, after)
	}
	leftovers, _ := filepath.Glob(filepath.Join(c.dir, "*", "debian", "pool", "main", "b", "buildbot", ".tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		path string
		want kind
	}{
		{debPath, immutable},
		{"/debian/pool/main/d/debian-installer/foo_1_amd64.udeb", immutable},
		{"/debian/pool/main/b/buildbot/buildbot_3.7.0-2.dsc", immutable},
		{"/debian/pool/main/b/buildbot/buildbot_3.7.0.orig.tar.gz", immutable},
		{"/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/0123abcd", immutable},
		{"/debian/dists/bookworm/InRelease", mutable},
		{"/debian/dists/bookworm/Release.gpg", mutable},
		{"/debian/dists/bookworm/main/binary-amd64/Packages.xz", mutable},
		{"/debian/dists/bookworm/main/source/Sources.gz", mutable},
		{"/debian/dists/bookworm/main/i18n/Translation-en.bz2", mutable},
		{"/debian/dists/bookworm/main/Contents-amd64.gz", mutable},
		{"/debian/dists/bookworm/main/binary-amd64/Packages.diff/Index", passthrough},
		{"/debian/", passthrough},
	}
	for _, tt := range tests {
		if got := classify(tt.path); got != tt.want {
			t.Errorf("classify(%q) = %v; want %v", tt.path, got, tt.want)
		}
	}
}

func TestListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "deb.debian.org:80", "[::]:0"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) = nil error; want a refusal (loopback only)", addr)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen(127.0.0.1:0): %v", err)
	}
	ln.Close()
}

func TestServeStopsOnCancel(t *testing.T) {
	c, err := New(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("GET while serving: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("origin-form GET = %d; want 400", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v; want nil", err)
	}
}
