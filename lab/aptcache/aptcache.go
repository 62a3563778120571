// Package aptcache is the lab's caching HTTP forward proxy for apt, so that
// bakes in lab instances do not download the same Debian and Ubuntu packages
// again and again.
//
// It owns the on-disk cache (one file per URL under a directory that outlives
// a lab), the allow-list of upstream mirrors, and the rules for what is cached
// and for how long:
//
//   - immutable files (pool packages, sources, by-hash indexes) are kept
//     forever once a complete 200 response has been stored;
//   - mutable indexes (InRelease, Release, Packages*, ...) are fresh for a
//     short while, then revalidated with If-None-Match / If-Modified-Since;
//     when the mirror cannot be reached a stale copy is served;
//   - everything else, Range requests and HEAD misses are passed through
//     without being stored.
//
// It does not decide where it listens (the lab does, on a loopback address;
// see Listen), does not configure apt in instances (the lab writes an
// apt.conf.d file), and never evicts: the cache grows until someone removes
// the directory. It is not a general proxy: hosts outside the allow-list get
// 403 and CONNECT (https tunnelling) gets 405.
package aptcache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latentworker/latentworker/lab/loopback"
)

// DefaultUpstreams are the hosts the proxy forwards to unless Allow is
// called: Debian's archives. The lab allows every release's (Ubuntu's too).
var DefaultUpstreams = []string{"deb.debian.org", "security.debian.org"}

// DefaultFreshness is how long a mutable index is served without asking the
// mirror whether it changed.
const DefaultFreshness = 30 * time.Minute

// maxHeaderLine bounds the metadata line at the start of a cache file.
const maxHeaderLine = 4096

// Cache is a caching forward proxy for apt. Its zero value is not usable;
// call New. It is safe for concurrent use once serving has started; Allow
// must be called before that.
type Cache struct {
	dir   string
	log   func(format string, args ...any)
	allow map[string]bool // "host" (port 80) or "host:port"
	fresh time.Duration
	now   func() time.Time
	rt    http.RoundTripper

	hits, misses, stale, pass atomic.Int64
	cacheBytes, upBytes       atomic.Int64
}

// Stats counts what the proxy did since New.
type Stats struct {
	Hits              int64 // answered from the cache (fresh, immutable or revalidated with 304)
	Misses            int64 // cacheable requests fetched from upstream
	Stale             int64 // stale indexes served because the mirror failed
	Passthrough       int64 // requests forwarded without caching (Range, HEAD miss, other paths)
	BytesFromCache    int64 // body bytes written to clients from the cache
	BytesFromUpstream int64 // body bytes written to clients from upstream
}

// String formats s for a log line.
func (s Stats) String() string {
	return fmt.Sprintf("apt cache: %d hits, %d misses, %d stale, %d passed through; %s from cache, %s from mirror",
		s.Hits, s.Misses, s.Stale, s.Passthrough, mib(s.BytesFromCache), mib(s.BytesFromUpstream))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// New returns a proxy caching under dir, which it creates if needed. log
// receives one line per upstream failure or discarded download; it may be
// nil. Temporary files left behind by an earlier process are removed.
func New(dir string, log func(format string, args ...any)) (*Cache, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("apt cache: create %s: %w", dir, err)
	}
	c := &Cache{
		dir:   dir,
		log:   log,
		fresh: DefaultFreshness,
		now:   time.Now,
		rt: &http.Transport{
			// Loopback upstreams (tests) are never proxied by ProxyFromEnvironment.
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			DisableCompression:    true, // store exactly the bytes the mirror has
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
		},
	}
	c.Allow(DefaultUpstreams...)
	c.removeStaleTemps()
	return c, nil
}

// Allow replaces the allow-list of upstream hosts. An entry "host" allows
// that host on port 80; "host:port" allows exactly that port. Call it before
// serving.
func (c *Cache) Allow(hosts ...string) {
	c.allow = make(map[string]bool, len(hosts))
	for _, h := range hosts {
		c.allow[strings.ToLower(h)] = true
	}
}

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(), Passthrough: c.pass.Load(),
		BytesFromCache: c.cacheBytes.Load(), BytesFromUpstream: c.upBytes.Load(),
	}
}

// Listen listens on addr, which must be a loopback IP address and port
// ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	return loopback.Listen("apt cache", addr, "127.0.0.1:3142")
}

// Serve answers on ln until ctx is done; it returns nil after ctx ends,
// and the server's error otherwise.
func (c *Cache) Serve(ctx context.Context, ln net.Listener) error {
	return loopback.Serve(ctx, ln, c, "apt cache")
}

// kind is what the cache does with a path.
type kind int

const (
	passthrough kind = iota
	immutable
	mutable
)

// classify decides from the URL path alone. Debian's and Ubuntu's archives
// never change a file in pool/ (the version is in its name) nor one under
// by-hash/ (the hash is).
func classify(p string) kind {
	base := path.Base(p)
	switch {
	case strings.Contains(p, "/by-hash/"),
		strings.HasSuffix(base, ".deb"), strings.HasSuffix(base, ".udeb"),
		strings.HasSuffix(base, ".dsc"), strings.Contains(base, ".tar."),
		strings.Contains(p, "/pool/") && strings.HasSuffix(base, ".diff.gz"):
		return immutable
	case base == "InRelease", base == "Release", base == "Release.gpg",
		strings.HasPrefix(base, "Packages"), strings.HasPrefix(base, "Sources"),
		strings.HasPrefix(base, "Translation-"), strings.HasPrefix(base, "Contents"):
		return mutable
	}
	return passthrough
}

// allowed reports whether host (from an absolute request URI) is an allowed
// upstream.
func (c *Cache) allowed(u *url.URL) bool {
	host := strings.ToLower(u.Host)
	if c.allow[host] {
		return true
	}
	if h, port, err := net.SplitHostPort(host); err == nil && port == "80" {
		return c.allow[h]
	}
	return false
}

// ServeHTTP answers one forward-proxy request.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		http.Error(w, "aptcache: CONNECT is not supported; use http:// mirrors", http.StatusMethodNotAllowed)
		return
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "aptcache: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	case r.URL.Scheme != "http" || r.URL.Host == "" || r.URL.User != nil:
		http.Error(w, "aptcache: this is a proxy: send an absolute http:// URI", http.StatusBadRequest)
		return
	case !c.allowed(r.URL):
		http.Error(w, "aptcache: upstream host not allowed: "+r.URL.Host, http.StatusForbidden)
		return
	}
	p := path.Clean("/" + r.URL.Path)
	k := classify(p)
	if r.URL.RawQuery != "" || strings.ContainsRune(p, 0) {
		k = passthrough
	}
	if k != passthrough && r.Header.Get("Range") != "" {
		// A range of a file we hold is answered from it; otherwise the
		// range is fetched from upstream and not stored.
		if e, f := c.open(r.URL.Host, p); e != nil {
			defer f.Close()
			if k == immutable || c.isFresh(f) {
				c.hits.Add(1)
				c.serveCached(w, r, e, f)
				return
			}
		}
		k = passthrough
	}
	if k == passthrough {
		c.passthrough(w, r)
		return
	}
	c.serveCacheable(w, r, k, p)
}

// entry is the metadata line at the start of a cache file; the body follows.
type entry struct {
	URL          string `json:"url"`
	ContentType  string `json:"content_type,omitempty"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	Size         int64  `json:"size"`
	hdrLen       int64
}

// file maps an upstream host and clean path to the cache file:
// DIR/deb.debian.org/debian/pool/.... Port 80 is dropped, so
// "deb.debian.org:80" and "deb.debian.org" share entries; another port's
// separator becomes "_".
func (c *Cache) file(host, p string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ":80")
	return filepath.Join(c.dir, strings.ReplaceAll(host, ":", "_"), filepath.FromSlash(p))
}

// open returns the cache entry for host and p, or nil if there is none or it
// is damaged (a short body fails the size check, so no fsync is needed).
// The returned file's modification time is when it was last validated.
func (c *Cache) open(host, p string) (*entry, *os.File) {
	f, err := os.Open(c.file(host, p))
	if err != nil {
		return nil, nil
	}
	line, err := bufio.NewReaderSize(f, maxHeaderLine).ReadSlice('\n')
	var e entry
	if err != nil || json.Unmarshal(line, &e) != nil {
		f.Close()
		return nil, nil
	}
	e.hdrLen = int64(len(line))
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != e.hdrLen+e.Size {
		f.Close()
		return nil, nil
	}
	return &e, f
}

func (c *Cache) isFresh(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && c.now().Sub(fi.ModTime()) < c.fresh
}

// serveCached answers from a cache file, honouring the client's Range and
// conditional headers.
func (c *Cache) serveCached(w http.ResponseWriter, r *http.Request, e *entry, f *os.File) {
	h := w.Header()
	h.Set("X-Cache", "HIT")
	if e.ContentType != "" {
		h.Set("Content-Type", e.ContentType)
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	if e.ETag != "" {
		h.Set("ETag", e.ETag)
	}
	mod, _ := http.ParseTime(e.LastModified)
	cw := &countWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", mod, io.NewSectionReader(f, e.hdrLen, e.Size))
	c.cacheBytes.Add(cw.n)
}

// serveCacheable answers a GET or HEAD without Range for a cacheable path.
func (c *Cache) serveCacheable(w http.ResponseWriter, r *http.Request, k kind, p string) {
	e, f := c.open(r.URL.Host, p)
	if f != nil {
		defer f.Close()
	}
	// apt sends "Cache-Control: max-age=0" with every index request by
	// default; that is ignored, or the cache would never save a request for
	// InRelease. Acquire::http::No-Cache (no-cache) is honoured.
	noCache := strings.Contains(r.Header.Get("Cache-Control"), "no-cache") || r.Header.Get("Pragma") == "no-cache"
	if e != nil && (k == immutable || (c.isFresh(f) && !noCache)) {
		c.hits.Add(1)
		c.serveCached(w, r, e, f)
		return
	}
	if r.Method == http.MethodHead && e == nil {
		c.passthrough(w, r)
		return
	}
	up := upstreamURL(r.URL)
	// HEAD stays HEAD: a stale entry is revalidated without a body.
	req, err := http.NewRequestWithContext(r.Context(), r.Method, up, nil)
	if err != nil {
		http.Error(w, "aptcache: bad URL", http.StatusBadRequest)
		return
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	if e != nil {
		if e.ETag != "" {
			req.Header.Set("If-None-Match", e.ETag)
		}
		if e.LastModified != "" {
			req.Header.Set("If-Modified-Since", e.LastModified)
		}
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		if e != nil && r.Context().Err() == nil {
			c.log("apt cache: %s: %v; serving the stale copy", up, err)
			c.stale.Add(1)
			c.serveCached(w, r, e, f)
			return
		}
		c.log("apt cache: %s: %v", up, err)
		http.Error(w, "aptcache: upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && e != nil:
		now := c.now()
		if err := os.Chtimes(f.Name(), now, now); err != nil {
			c.log("apt cache: mark %s fresh: %v", up, err)
		}
		c.hits.Add(1)
		c.serveCached(w, r, e, f)
		return
	case resp.StatusCode == http.StatusOK && r.Method == http.MethodGet:
		c.misses.Add(1)
		c.fetch(w, r, p, up, resp)
		return
	case resp.StatusCode == http.StatusOK: // HEAD on a stale entry: tell what upstream has now
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(http.StatusOK)
		c.pass.Add(1)
		return
	case resp.StatusCode >= 500 && e != nil:
		c.log("apt cache: %s: %s; serving the stale copy", up, resp.Status)
		c.stale.Add(1)
		c.serveCached(w, r, e, f)
		return
	case (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone) && e != nil:
		// The mirror dropped the file: so do we.
		_ = os.Remove(f.Name())
	}
	c.pass.Add(1)
	c.relay(w, r, resp)
}

// fetch streams a 200 response to the client and into a temporary file
// beside the cache file, and renames it into place only if the body is
// complete. Concurrent fetches of one URL each write their own temporary
// file; the last complete one wins, and all hold the same bytes.
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, p, up string, resp *http.Response) {
	target := c.file(r.URL.Host, p)
	var tmp *os.File
	// Debian's mirrors send Content-Length for every file; without one a
	// complete body cannot be told from a cut one, so it is not stored.
	if resp.ContentLength >= 0 {
		e := entry{URL: up, ContentType: resp.Header.Get("Content-Type"), ETag: resp.Header.Get("ETag"),
			LastModified: resp.Header.Get("Last-Modified"), Size: resp.ContentLength}
		var err error
		tmp, err = c.createTemp(target, e)
		if err != nil {
			c.log("apt cache: %s: not cached: %v", up, err)
		}
	}
	copyHeader(w.Header(), resp.Header)
	w.Header().Set("X-Cache", "MISS")
	w.WriteHeader(http.StatusOK)

	dst := io.Writer(w)
	if tmp != nil {
		dst = io.MultiWriter(tmp, w)
	}
	n, err := io.Copy(dst, resp.Body)
	c.upBytes.Add(n)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("body is %d bytes, Content-Length %d", n, resp.ContentLength)
	}
	if tmp != nil {
		if err == nil {
			err = c.commit(tmp, target)
			if err != nil {
				c.log("apt cache: %s: not cached: %v", up, err)
				return // the client got it all
			}
		} else {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}
	if err != nil {
		c.log("apt cache: %s: transfer cut after %d bytes: %v", up, n, err)
		// Make the client see a broken transfer, not a short file.
		panic(http.ErrAbortHandler)
	}
}

// createTemp creates a temporary file beside target and writes e's line.
func (c *Cache) createTemp(target string, e entry) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, fmt.Errorf("create cache directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	if err := writeEntry(tmp, e); err != nil {
		tmp.Close()
		_ = os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}

func writeEntry(f *os.File, e entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode cache entry: %w", err)
	}
	if bytes.IndexByte(line, '\n') >= 0 || len(line) >= maxHeaderLine {
		return errors.New("cache entry line too long")
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// commit closes tmp and renames it to target.
func (c *Cache) commit(tmp *os.File, target string) error {
	name := tmp.Name()
	if err := tmp.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Chmod(name, 0o644); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	now := c.now()
	_ = os.Chtimes(name, now, now)
	if err := os.Rename(name, target); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("rename into %s: %w", target, err)
	}
	return nil
}

// passthrough forwards a request without touching the cache.
func (c *Cache) passthrough(w http.ResponseWriter, r *http.Request) {
	c.pass.Add(1)
	req, err := http.NewRequestWithContext(r.Context(), r.Method, upstreamURL(r.URL), nil)
	if err != nil {
		http.Error(w, "aptcache: bad URL", http.StatusBadRequest)
		return
	}
	copyHeader(req.Header, r.Header)
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		c.log("apt cache: %s: %v", req.URL, err)
		http.Error(w, "aptcache: upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	c.relay(w, r, resp)
}

// relay copies an upstream response to the client as it is.
func (c *Cache) relay(w http.ResponseWriter, r *http.Request, resp *http.Response) {
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	n, err := io.Copy(w, resp.Body)
	c.upBytes.Add(n)
	if err != nil {
		c.log("apt cache: %s: transfer cut after %d bytes: %v", resp.Request.URL, n, err)
		panic(http.ErrAbortHandler)
	}
}

// upstreamURL is the request's URL as sent to the mirror.
func upstreamURL(u *url.URL) string {
	v := url.URL{Scheme: "http", Host: u.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
	return v.String()
}

// hopByHop headers belong to one connection and are never forwarded.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

func copyHeader(dst, src http.Header) {
	drop := map[string]bool{}
	for _, v := range src.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			drop[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for k, vs := range src {
		if hopByHop[k] || drop[k] {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

// countWriter counts body bytes written.
type countWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// removeStaleTemps deletes temporary files older than an hour, left by a
// process that died mid-download. Younger ones may belong to another lab.
func (c *Cache) removeStaleTemps() {
	cutoff := time.Now().Add(-time.Hour)
	var once sync.Once
	_ = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().Before(cutoff) {
			if err := os.Remove(p); err != nil {
				once.Do(func() { c.log("apt cache: remove leftover %s: %v", p, err) })
			}
		}
		return nil
	})
}

// AptConfPath is where, relative to an instance's root, the lab writes
// AptConf's output. Image capture must remove it (see image.Scrub).
const AptConfPath = "etc/apt/apt.conf.d/00latentlab-proxy"

// AptConf is the apt.conf.d file that sends an instance's apt through the
// proxy listening on addr (a loopback host:port, as from Listen). https
// sources, if any, go direct: the proxy does not tunnel.
func AptConf(addr string) string {
	return "// written by latentlab: apt goes through the lab's caching proxy\n" +
		"Acquire::http::Proxy \"http://" + addr + "/\";\n" +
		"Acquire::https::Proxy \"DIRECT\";\n"
}
