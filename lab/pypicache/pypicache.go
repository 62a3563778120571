// Package pypicache is the lab's caching mirror of PyPI for its instances,
// so that bakes that install buildbot-worker with pip do not depend on
// PyPI's speed, download the same wheels once, and work although the
// instances' own CA store cannot verify the host's route to PyPI.
//
// It serves the simple repository API (PEP 503) on a loopback address:
// /simple/NAME/ is PyPI's HTML index of NAME with every link to
// files.pythonhosted.org rewritten to /files/..., and /files/PATH is that
// file. Files (whose paths carry their hash) are kept forever once
// complete; an index is fresh for a while, then fetched again, and served
// stale when PyPI cannot be reached. Everything else is 404.
//
// It does not decide where it listens (the lab does; see Listen) and does
// not configure pip in instances (the lab writes PipConf at PipConfPath).
// It never evicts: the cache grows until someone removes the directory.
package pypicache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/latentworker/latentworker/lab/loopback"
)

// Upstreams: the index and the file host.
const (
	DefaultIndex = "https://pypi.org/simple/"
	DefaultFiles = "https://files.pythonhosted.org/"
)

// DefaultFreshness is how long an index is served without asking PyPI.
const DefaultFreshness = 10 * time.Minute

// maxIndex bounds an index page (buildbot's are a few hundred KiB).
const maxIndex = 32 << 20

// Cache is the mirror. Create it with New.
type Cache struct {
	dir          string
	index, files string
	fresh        time.Duration
	log          func(format string, args ...any)
	client       *http.Client

	hits, misses, stale atomic.Int64
}

// New returns a mirror caching under dir (created if needed). log receives
// one line per upstream failure; it may be nil.
func New(dir string, log func(format string, args ...any)) (*Cache, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	for _, d := range []string{"simple", "files", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("pypi cache: create %s: %w", dir, err)
		}
	}
	return &Cache{
		dir: dir, index: DefaultIndex, files: DefaultFiles, fresh: DefaultFreshness, log: log,
		client: &http.Client{Timeout: 10 * time.Minute},
	}, nil
}

// SetUpstreams points the mirror at another index and file host (tests);
// both are URLs ending in "/". Call it before serving.
func (c *Cache) SetUpstreams(index, files string) { c.index, c.files = index, files }

// Stats says what the mirror did since New.
func (c *Cache) Stats() string {
	return fmt.Sprintf("%d hits, %d misses, %d stale indexes served", c.hits.Load(), c.misses.Load(), c.stale.Load())
}

// Listen listens on addr, which must be a loopback IP address and port
// ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	return loopback.Listen("pypi cache", addr, "127.0.0.1:4572")
}

// Serve answers on ln until ctx is done; it returns nil after ctx ends,
// and the server's error otherwise.
func (c *Cache) Serve(ctx context.Context, ln net.Listener) error {
	return loopback.Serve(ctx, ln, c, "pypi cache")
}

// nameRE is a project name as PEP 508 allows it.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,200}[A-Za-z0-9])?$`)

var separatorsRE = regexp.MustCompile(`[-_.]+`)

// normalize is PEP 503's normalized name.
func normalize(name string) string {
	return strings.ToLower(separatorsRE.ReplaceAllString(name, "-"))
}

// ServeHTTP serves /simple/NAME/ and /files/PATH.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/simple/"):
		name := strings.Trim(strings.TrimPrefix(p, "/simple/"), "/")
		if !nameRE.MatchString(name) {
			http.NotFound(w, r)
			return
		}
		c.serveIndex(w, r, normalize(name))
	case strings.HasPrefix(p, "/files/"):
		rel := strings.TrimPrefix(p, "/files/")
		if rel == "" || path.Clean("/"+rel) != "/"+rel || strings.Contains(rel, "..") {
			http.NotFound(w, r)
			return
		}
		c.serveFile(w, r, rel)
	default:
		http.NotFound(w, r)
	}
}

func (c *Cache) serveIndex(w http.ResponseWriter, r *http.Request, name string) {
	file := filepath.Join(c.dir, "simple", name+".html")
	st, err := os.Stat(file)
	if err != nil || time.Since(st.ModTime()) > c.fresh {
		body, ferr := c.fetchIndex(r.Context(), name)
		switch {
		case ferr == nil:
			c.misses.Add(1)
			if err := c.store(file, bytes.NewReader(body)); err != nil {
				c.log("pypi cache: %v", err)
			}
		case err == nil:
			c.stale.Add(1)
			c.log("pypi cache: index of %s: %v; serving the cached copy", name, ferr)
		default:
			var nf notFound
			if errors.As(ferr, &nf) {
				http.NotFound(w, r)
				return
			}
			c.log("pypi cache: index of %s: %v", name, ferr)
			http.Error(w, "PyPI unreachable", http.StatusBadGateway)
			return
		}
	} else {
		c.hits.Add(1)
	}
	body, err := os.ReadFile(file)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Links are relative to the mirror, whatever address a client used.
	body = bytes.ReplaceAll(body, []byte(c.files), []byte("/files/"))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(body)
}

type notFound struct{ url string }

func (e notFound) Error() string { return e.url + ": 404" }

func (c *Cache) fetchIndex(ctx context.Context, name string) ([]byte, error) {
	u := c.index + name + "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.pypi.simple.v1+html")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, notFound{u}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIndex+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if len(body) > maxIndex {
		return nil, fmt.Errorf("%s: index larger than %d bytes", u, maxIndex)
	}
	return body, nil
}

func (c *Cache) serveFile(w http.ResponseWriter, r *http.Request, rel string) {
	file := filepath.Join(c.dir, "files", filepath.FromSlash(rel))
	if _, err := os.Stat(file); err == nil {
		c.hits.Add(1)
		http.ServeFile(w, r, file)
		return
	}
	u := c.files + rel
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.log("pypi cache: %s: %v", u, err)
		http.Error(w, "PyPI unreachable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		http.Error(w, "upstream: "+resp.Status, resp.StatusCode)
		return
	}
	c.misses.Add(1)
	if err := c.store(file, resp.Body); err != nil {
		c.log("pypi cache: %v", err)
		http.Error(w, "download failed", http.StatusBadGateway)
		return
	}
	http.ServeFile(w, r, file)
}

// store writes r to file through a temporary file, so that a file in the
// cache is always complete.
func (c *Cache) store(file string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "dl-")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("store %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// PipConfPath is where the lab writes PipConf in an instance (relative to
// its root). Image capture removes it (image.Scrub).
const PipConfPath = "etc/pip.conf"

// PipConf is the pip configuration that sends an instance's pip to the
// mirror listening on addr (a loopback host:port).
func PipConf(addr string) string {
	return "# written by latentlab: pip goes through the lab's PyPI mirror\n" +
		"[global]\n" +
		"index-url = http://" + addr + "/simple/\n" +
		"trusted-host = " + addr + "\n"
}
