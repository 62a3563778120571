// Package cpythonsrc gives the lab a CPython source repository for its
// instances to clone, as the fleet's builds clone CPython's from GitHub:
// no network but the package registries is reachable here, so the source
// comes from Debian's source archive. The trixie python3.13 source
// package carries CPython's upstream release tarball and its OpenPGP
// signature; Ensure downloads them with apt-get (the archive's signed
// Release vouches for the .dsc, which vouches for every file by its
// SHA-256), checks the tarball's signature with gpgv against the release
// manager's key that the Debian package itself ships
// (debian/upstream/signing-key.asc) and whose fingerprint is pinned here,
// commits the unpacked tree into a git repository in the lab's cache on
// first use, and Handler serves it read-only over git's smart HTTP on
// loopback.
//
// It owns that repository and its provenance file. It does not build
// CPython (the lab master's builder does, on an instance).
package cpythonsrc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/latentworker/latentworker/lab/flock"
)

// The source: Debian 13's python3.13, from the archive the lab's releases
// come from.
const (
	Suite         = "trixie"
	SourcePackage = "python3.13"
	Archive       = "http://deb.debian.org/debian"
	// Keyring verifies the archive (debian-archive-keyring, on the host).
	Keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
	// SigningKey is the fingerprint of the key that signs CPython 3.13's
	// releases: Thomas Wouters, its release manager (python.org lists
	// him with key A821E680E5FA6305). The signature is checked against
	// the key in debian/upstream/signing-key.asc and must be by this one.
	SigningKey = "7169605F62C751356D054A26A821E680E5FA6305"
)

// RepoName is the repository's directory under Root, and its path in the
// served URL: http://ADDR/cpython.git.
const RepoName = "cpython.git"

// Repo is the lab's CPython repository.
type Repo struct {
	// Dir is the bare repository.
	Dir string
	// Version is CPython's version, e.g. "3.13.5"; Branch its branch
	// ("3.13", also "main") and Tag its release tag ("v3.13.5").
	Version, Branch, Tag string
	// Source says where it came from (the provenance file's text).
	Source string
}

// Root is the directory under the lab's cache that holds the repository
// (and apt's files for the source archive).
func Root(cacheDir string) string { return filepath.Join(cacheDir, "cpython") }

// provenanceFile is written into the repository when it is complete.
const provenanceFile = "latentlab-source"

// Ensure returns the lab's CPython repository under cacheDir, making it on
// first use (about a minute: 10 MB of source index, 23 MB of tarball,
// then unpacked and committed); later calls return at once. Labs started
// together make it once (a lock). Progress goes to log. It needs apt-get,
// gpgv, tar, xz and git on the host and Debian's archive.
func Ensure(ctx context.Context, cacheDir string, log io.Writer) (Repo, error) {
	root := Root(cacheDir)
	if r, err := Load(cacheDir); err == nil {
		return r, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return Repo{}, err
	}
	unlock, err := flock.Lock(ctx, filepath.Join(root, ".lock"), nil)
	if err != nil {
		return Repo{}, err
	}
	defer unlock()
	if r, err := Load(cacheDir); err == nil { // made by another lab meanwhile
		return r, nil
	}
	for _, tool := range []string{"apt-get", "gpgv", "gpg", "tar", "xz", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Repo{}, fmt.Errorf("the lab's CPython repository needs %s on the host", tool)
		}
	}
	start := time.Now()
	fmt.Fprintf(log, "latentlab: making the CPython repository from Debian's %s %s source package (once; cached in %s)\n", Suite, SourcePackage, root)
	work, err := os.MkdirTemp(root, "making-")
	if err != nil {
		return Repo{}, err
	}
	defer os.RemoveAll(work)
	files, err := download(ctx, root, work)
	if err != nil {
		return Repo{}, err
	}
	sigTime, err := verify(ctx, work, files)
	if err != nil {
		return Repo{}, err
	}
	r, err := commit(ctx, root, work, files, sigTime)
	if err != nil {
		return Repo{}, err
	}
	fmt.Fprintf(log, "latentlab: CPython %s repository ready in %s (%s)\n", r.Version, r.Dir, time.Since(start).Round(time.Second))
	return r, nil
}

// Load returns the repository Ensure made, or an error when there is none.
func Load(cacheDir string) (Repo, error) {
	dir := filepath.Join(Root(cacheDir), RepoName)
	b, err := os.ReadFile(filepath.Join(dir, provenanceFile))
	if err != nil {
		return Repo{}, err
	}
	r := Repo{Dir: dir, Source: string(b)}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "version":
			r.Version = v
		case "branch":
			r.Branch = v
		case "tag":
			r.Tag = v
		}
	}
	if r.Version == "" || r.Branch == "" {
		return Repo{}, fmt.Errorf("%s: incomplete provenance", dir)
	}
	return r, nil
}

// sourceFiles are the downloaded files of the source package.
type sourceFiles struct {
	dsc, orig, asc, debian string
	version                string // upstream version, "3.13.5"
}

// origRE matches the upstream tarball's name.
var origRE = regexp.MustCompile(`^` + regexp.QuoteMeta(SourcePackage) + `_([0-9]+\.[0-9]+\.[0-9]+)\.orig\.tar\.xz$`)

// download fetches the source package into work with apt-get, on a
// configuration of its own (sources, lists and cache under root, no host
// state): apt checks the Release signature with Keyring and each file's
// hash against the signed index.
func download(ctx context.Context, root, work string) (sourceFiles, error) {
	var f sourceFiles
	aptDir := filepath.Join(root, "apt")
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(aptDir, d), 0o755); err != nil {
			return f, err
		}
	}
	sources := filepath.Join(aptDir, "sources.list")
	line := fmt.Sprintf("deb-src [signed-by=%s] %s %s main\n", Keyring, Archive, Suite)
	if err := os.WriteFile(sources, []byte(line), 0o644); err != nil {
		return f, err
	}
	opts := []string{
		"-o", "Dir::Etc::SourceList=" + sources, "-o", "Dir::Etc::SourceParts=/dev/null",
		"-o", "Dir::State::Lists=" + filepath.Join(aptDir, "lists"), "-o", "Dir::Cache=" + filepath.Join(aptDir, "cache"),
		"-o", "Dir::State::status=/dev/null", "-o", "Dir::Etc::Preferences=/dev/null",
		"-o", "Dir::Etc::PreferencesParts=/dev/null", "-o", "Acquire::Languages=none", "-o", "Acquire::Retries=3",
		// The files go to a directory the sandbox user may not write.
		"-o", "APT::Sandbox::User=root", "-q",
	}
	if out, err := run(ctx, "", "apt-get", append(opts, "update")...); err != nil {
		return f, fmt.Errorf("apt-get update (deb-src %s %s): %w\n%s", Archive, Suite, err, out)
	}
	if out, err := run(ctx, work, "apt-get", append(opts, "source", "--download-only", SourcePackage)...); err != nil {
		return f, fmt.Errorf("apt-get source --download-only %s: %w\n%s", SourcePackage, err, out)
	}
	names, err := os.ReadDir(work)
	if err != nil {
		return f, err
	}
	for _, e := range names {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".dsc"):
			f.dsc = n
		case strings.HasSuffix(n, ".orig.tar.xz.asc"):
			f.asc = n
		case strings.HasSuffix(n, ".debian.tar.xz"):
			f.debian = n
		case origRE.MatchString(n):
			f.orig, f.version = n, origRE.FindStringSubmatch(n)[1]
		}
	}
	if f.dsc == "" || f.orig == "" || f.asc == "" || f.debian == "" {
		return f, fmt.Errorf("apt-get source %s gave %v; want the .dsc, the .orig.tar.xz with its .asc and the .debian.tar.xz", SourcePackage, names)
	}
	return f, nil
}

// verify checks the upstream tarball's signature against the release
// manager's key the Debian package ships, and that the key is the pinned
// one. It returns the signature's time.
func verify(ctx context.Context, work string, f sourceFiles) (time.Time, error) {
	if out, err := run(ctx, work, "tar", "-xJf", f.debian, "debian/upstream/signing-key.asc"); err != nil {
		return time.Time{}, fmt.Errorf("the upstream signing key in %s: %w\n%s", f.debian, err, out)
	}
	keyring := filepath.Join(work, "upstream-key.gpg")
	armored, err := os.ReadFile(filepath.Join(work, "debian/upstream/signing-key.asc"))
	if err != nil {
		return time.Time{}, err
	}
	cmd := exec.CommandContext(ctx, "gpg", "--batch", "--no-options", "--homedir", work, "--dearmor")
	cmd.Stdin = bytes.NewReader(armored)
	bin, err := cmd.Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("gpg --dearmor the upstream signing key: %w", err)
	}
	if err := os.WriteFile(keyring, bin, 0o644); err != nil {
		return time.Time{}, err
	}
	cmd = exec.CommandContext(ctx, "gpgv", "--status-fd", "1", "--keyring", keyring, f.asc, f.orig)
	cmd.Dir = work
	out, err := cmd.Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("gpgv %s: the signature does not verify: %w\n%s", f.orig, err, out)
	}
	fpr, when, err := validSig(out)
	if err != nil {
		return time.Time{}, fmt.Errorf("gpgv %s: %w", f.orig, err)
	}
	if fpr != SigningKey {
		return time.Time{}, fmt.Errorf("gpgv %s: signed by %s; want CPython's release manager's %s", f.orig, fpr, SigningKey)
	}
	return when, nil
}

// validSig reads gpgv's status output: the primary key fingerprint and
// time of a VALIDSIG line.
func validSig(status []byte) (string, time.Time, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// [GNUPG:] VALIDSIG FPR DATE TIMESTAMP EXPIRE VER RES PK HASH CLASS PRIMARY-FPR
		if len(f) >= 12 && f[0] == "[GNUPG:]" && f[1] == "VALIDSIG" {
			ts, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return "", time.Time{}, fmt.Errorf("VALIDSIG time %q", f[4])
			}
			return f[11], time.Unix(ts, 0).UTC(), nil
		}
	}
	return "", time.Time{}, errors.New("no valid signature in gpgv's status")
}

// commit unpacks the tarball, commits it (author and date fixed, so the
// commit is the same everywhere) on branch VERSION's X.Y and main, tags
// it, and moves a bare clone into place with its provenance.
func commit(ctx context.Context, root, work string, f sourceFiles, when time.Time) (Repo, error) {
	xy := f.version[:strings.LastIndex(f.version, ".")]
	r := Repo{Version: f.version, Branch: xy, Tag: "v" + f.version}
	src := filepath.Join(work, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return r, err
	}
	if out, err := run(ctx, src, "tar", "-xJf", filepath.Join(work, f.orig), "--strip-components=1"); err != nil {
		return r, fmt.Errorf("unpack %s: %w\n%s", f.orig, err, out)
	}
	date := when.Format(time.RFC3339)
	git := func(dir string, args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=CPython release "+f.version, "GIT_AUTHOR_EMAIL=latentlab@localhost",
			"GIT_COMMITTER_NAME=latentlab", "GIT_COMMITTER_EMAIL=latentlab@localhost",
			"GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	msg := fmt.Sprintf("Python %s\n\nCPython's release tarball %s, signed by %s, from Debian's source archive (%s %s, %s).\n",
		f.version, strings.TrimPrefix(f.orig, SourcePackage+"_"), SigningKey, Suite, SourcePackage, f.dsc)
	for _, args := range [][]string{
		{"init", "-q", "-b", xy},
		// The tarball holds what git would ignore (its generated files):
		// all of it is the release.
		{"add", "-A", "-f", "."},
		{"commit", "-q", "-m", msg},
		{"tag", r.Tag},
		{"branch", "main"},
	} {
		if err := git(src, args...); err != nil {
			return r, err
		}
	}
	bare := filepath.Join(work, RepoName)
	if err := git(work, "clone", "-q", "--bare", "--no-local", src, bare); err != nil {
		return r, err
	}
	for _, kv := range [][2]string{
		{"uploadpack.allowFilter", "true"}, // the fleet clones blob:none
		{"http.receivepack", "false"},
	} {
		if err := git(bare, "config", kv[0], kv[1]); err != nil {
			return r, err
		}
	}
	if err := git(bare, "symbolic-ref", "HEAD", "refs/heads/"+xy); err != nil {
		return r, err
	}
	r.Source = fmt.Sprintf("version: %s\nbranch: %s\ntag: %s\nfrom: %s %s %s (deb-src, signed-by %s): %s\n"+
		"signature: %s verified with gpgv against debian/upstream/signing-key.asc of %s, key %s, made %s\n",
		r.Version, r.Branch, r.Tag, Archive, Suite, SourcePackage, Keyring, f.dsc,
		f.asc, f.debian, SigningKey, when.Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(bare, provenanceFile), []byte(r.Source), 0o644); err != nil {
		return r, err
	}
	r.Dir = filepath.Join(root, RepoName)
	_ = os.RemoveAll(r.Dir) // an incomplete one, without provenance
	if err := os.Rename(bare, r.Dir); err != nil {
		return r, err
	}
	return r, nil
}

// Handler serves the repositories under root (Root) read-only over git's
// smart HTTP protocol, with git http-backend as a CGI program: clone and
// fetch, never push.
func Handler(root string) (http.Handler, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git --exec-path: %w", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("git http-backend: %w", err)
	}
	h := &cgi.Handler{
		Path: backend,
		Dir:  root,
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "git-receive-pack") || req.URL.Query().Get("service") == "git-receive-pack" {
			http.Error(w, "read-only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, req)
	}), nil
}

// run runs a command in dir (the current directory when "") and returns
// its combined output's tail.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return string(out), err
}
