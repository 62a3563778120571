package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// ErrInvalidPassword is returned (wrapped) for a worker password that
// cannot travel as the first line of a script's stdin. The message never
// contains the password.
var ErrInvalidPassword = errors.New("worker password must be one non-empty line without NUL")

// scriptRemoveTimeout bounds the removal of an uploaded script, which runs
// even after ctx ended.
const scriptRemoveTimeout = 30 * time.Second

// Driver runs a platform's scripts (package scripts) on a machine, through
// the transport (Client) and the platform's shell (ShellFor).
//
// Each script is uploaded to a new private file (on POSIX systems
// /tmp/latentworker-NAME-RANDOM.sh, mode 0700, owned by the login user),
// run as root the platform's way — sudo -n, doas -n and su never prompt and
// never read stdin — and removed afterwards, also when it fails or ctx
// ends. The worker password, when a
// script needs it, is the first line of its stdin: it is never in a command
// string, so never in a process's argv, and it is replaced by "[redacted]"
// in progress lines and errors should a script ever print it.
type Driver struct {
	// Platform is the machine's platform (platform.Lookup).
	Platform *platform.Platform
	// Reconnect, when set, connects to the machine again after the
	// connection old was lost while a script ran (see run); the new client
	// replaces old for the rest of the script and is the caller's to use
	// afterwards too.
	Reconnect func(ctx context.Context, old *Client) (*Client, error)
	// Progress receives what the scripts report: every line they write to
	// stderr, and to stdout except Verify's facts. Each Write is one whole
	// line ending in "\n". Nil discards.
	Progress io.Writer
	// RebootPoll is the wait between reconnections while a rebooting
	// machine's old boot still answers (default 2 s).
	RebootPoll time.Duration
}

// Setup runs the platform's Setup script for w with password on stdin:
// it installs buildbot-worker and creates or refreshes the worker.
func (d *Driver) Setup(ctx context.Context, c *Client, w scripts.Worker, password string) error {
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("setup on %s: %w", c.Addr(), err)
	}
	script, err := scripts.Setup(d.Platform, w)
	if err != nil {
		return err
	}
	return d.run(ctx, c, "setup", script, password, nil)
}

// Configure runs the configure half of the platform's Setup alone (see
// scripts.Configure) for w with password on stdin, on a machine where
// buildbot-worker is already installed the platform's way.
func (d *Driver) Configure(ctx context.Context, c *Client, w scripts.Worker, password string) error {
	if err := checkPassword(password); err != nil {
		return fmt.Errorf("configure on %s: %w", c.Addr(), err)
	}
	script, err := scripts.Configure(d.Platform, w)
	if err != nil {
		return err
	}
	return d.run(ctx, c, "configure", script, password, nil)
}

// Verify runs the platform's Verify script for w with password on stdin
// and returns the facts it reports. The error is a *scripts.MismatchError
// (wrapped) when the facts do not match w (scripts.Facts.Check); the
// facts are returned with it.
func (d *Driver) Verify(ctx context.Context, c *Client, w scripts.Worker, password string) (scripts.Facts, error) {
	if err := checkPassword(password); err != nil {
		return scripts.Facts{}, fmt.Errorf("verify on %s: %w", c.Addr(), err)
	}
	script, err := scripts.Verify(d.Platform, w)
	if err != nil {
		return scripts.Facts{}, err
	}
	var out bytes.Buffer
	if err := d.run(ctx, c, "verify", script, password, &out); err != nil {
		return scripts.Facts{}, err
	}
	facts, err := scripts.ParseFacts(out.Bytes())
	if err != nil {
		return scripts.Facts{}, redact(fmt.Errorf("verify on %s: %w", c.Addr(), err), password)
	}
	if err := facts.Check(d.Platform, w); err != nil {
		return facts, redact(fmt.Errorf("verify on %s: %w", c.Addr(), err), password)
	}
	return facts, nil
}

// Updates runs the platform's Updates script: all pending package updates.
func (d *Driver) Updates(ctx context.Context, c *Client) error {
	script, err := scripts.Updates(d.Platform)
	if err != nil {
		return err
	}
	return d.run(ctx, c, "updates", script, "", nil)
}

// RebootRequired runs the platform's RebootRequired script and reports
// whether the OS asks for a reboot.
func (d *Driver) RebootRequired(ctx context.Context, c *Client) (bool, error) {
	script, err := scripts.RebootRequired(d.Platform)
	if err != nil {
		return false, err
	}
	err = d.run(ctx, c, "reboot-required", script, "", nil)
	var ee *ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.Signal == "" && ee.Status == scripts.RebootNotRequiredExit:
		return false, nil
	}
	return false, err
}

// Generalize runs the platform's Generalize script, which removes
// tempPublicKey from authorized_keys, clears host keys and machine-id and
// trims logs. The connection stays usable until it is closed; a new one
// needs another key.
func (d *Driver) Generalize(ctx context.Context, c *Client, tempPublicKey string) error {
	script, err := scripts.Generalize(d.Platform, c.User(), tempPublicKey)
	if err != nil {
		return err
	}
	return d.run(ctx, c, "generalize", script, "", nil)
}

// BuildDeps runs the platform's BuildDeps script: CPython's build
// dependencies when cpython is true, and the packages extra. It does
// nothing when there is neither. A name the release lacks fails the
// script, naming it, before anything is installed.
func (d *Driver) BuildDeps(ctx context.Context, c *Client, cpython bool, extra []string) error {
	var script []byte
	var err error
	switch {
	case cpython:
		script, err = scripts.BuildDeps(d.Platform, extra...)
	case len(extra) > 0:
		script, err = scripts.Packages(d.Platform, extra)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	return d.run(ctx, c, "builddeps", script, "", nil)
}

// RunScript runs a user's extra script as root, like the platform's
// scripts, with empty stdin: it never receives the worker password. name
// identifies it in the temporary file name and in errors.
func (d *Driver) RunScript(ctx context.Context, c *Client, name string, content []byte) error {
	return d.run(ctx, c, name, content, "", nil)
}

// Shell returns the platform's shell for c's login user.
func (d *Driver) Shell(c *Client) (Shell, error) {
	return ShellFor(d.Platform, c.User())
}

// Reboot reboots the machine (see Reboot) with the platform's shell.
func (d *Driver) Reboot(ctx context.Context, c *Client, redial func(context.Context) (*Client, error)) (*Client, error) {
	sh, err := d.Shell(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	poll := d.RebootPoll
	if poll <= 0 {
		poll = rebootPoll
	}
	return reboot(ctx, c, sh, redial, sh.Reboot(), poll)
}

// OSName returns the machine's operating system name: PRETTY_NAME of
// /etc/os-release on Linux, the shell's one line elsewhere; "" when it
// says nothing.
func (d *Driver) OSName(ctx context.Context, c *Client) (string, error) {
	sh, err := d.Shell(c)
	if err != nil {
		return "", err
	}
	out, err := c.Output(ctx, sh.OSName(), nil)
	if err != nil {
		return "", fmt.Errorf("reading the OS name on %s: %w", c.Addr(), err)
	}
	return osName(out), nil
}

// osName returns PRETTY_NAME of an os-release file, or the first line of
// any other text.
func osName(out []byte) string {
	lines := strings.Split(string(out), "\n")
	for _, line := range lines {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return strings.TrimSpace(lines[0])
}

// AuthorizeKey adds an OpenSSH public key line to the login user's
// authorized keys (a kept builder's debug key).
func (d *Driver) AuthorizeKey(ctx context.Context, c *Client, publicKey string) error {
	sh, err := d.Shell(c)
	if err != nil {
		return err
	}
	key := strings.TrimSpace(publicKey)
	if key == "" || strings.ContainsAny(key, "\r\n\x00") {
		return errors.New("authorize key: want one public key line")
	}
	return c.Run(ctx, sh.AuthorizeKey(), strings.NewReader(key+"\n"), nil, nil)
}

// run uploads script, runs it as root with secret (if any) as the first
// line of stdin, and removes it. stdout nil sends stdout to Progress.
//
// Where the shell can (Detacher), the script runs as a detached job that
// outlives the SSH session: when the connection drops while it runs and
// Reconnect is set, run reconnects and follows the job again from where it
// was, to the end and its real exit status.
func (d *Driver) run(ctx context.Context, c *Client, name string, script []byte, secret string, stdout io.Writer) (err error) {
	sh, err := d.Shell(c)
	if err != nil {
		return err
	}
	path, err := scriptPath(sh, name)
	if err != nil {
		return fmt.Errorf("%s script on %s: %w", name, c.Addr(), err)
	}
	removed := false // a job's end removed the script already
	defer func() {
		if removed {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scriptRemoveTimeout)
		defer cancel()
		if rmErr := c.Run(rctx, sh.Remove(path), nil, nil, nil); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("%s script on %s: remove %s: %w", name, c.Addr(), path, rmErr))
		}
	}()
	if err := d.retry(ctx, &c, func() error { return c.Upload(ctx, path, script, 0o700) }, func() error {
		return c.Run(ctx, sh.Remove(path), nil, nil, nil)
	}); err != nil {
		return fmt.Errorf("%s script: %w", name, err)
	}
	// One line buffer per stream, so that a partial line on one is never
	// joined to a line of the other.
	sink := &lockedWriter{w: d.Progress}
	progress := &lineWriter{w: sink, secret: secret}
	defer progress.Flush()
	if stdout == nil {
		out := &lineWriter{w: sink, secret: secret}
		defer out.Flush()
		stdout = out
	}
	if dt, ok := sh.(Detacher); ok {
		return redact(d.runJob(ctx, &c, dt, name, path, secret, stdout, progress, &removed), secret)
	}
	var stdin io.Reader
	if secret != "" {
		stdin = strings.NewReader(secret + "\n")
	}
	if err := c.Run(ctx, sh.RunScript(path), stdin, stdout, progress); err != nil {
		return redact(fmt.Errorf("%s script: %w", name, err), secret)
	}
	return nil
}

// lostConnection reports whether err is the connection failing rather than
// a command's status or ctx ending.
func lostConnection(ctx context.Context, err error) bool {
	var ee *ExitError
	return err != nil && ctx.Err() == nil && !errors.As(err, &ee)
}

// retry runs f; when the connection is lost and Reconnect is set, it
// reconnects (*c is then the new client), runs undo (to start over
// cleanly; nil for none) and f again, at most maxReconnects times.
func (d *Driver) retry(ctx context.Context, c **Client, f, undo func() error) error {
	for n := 0; ; n++ {
		err := f()
		if !lostConnection(ctx, err) || d.Reconnect == nil || n >= maxReconnects {
			return err
		}
		if rerr := d.reconnect(ctx, c, err); rerr != nil {
			return rerr
		}
		if undo != nil {
			_ = undo()
		}
	}
}

// maxReconnects bounds the reconnections of one script.
const maxReconnects = 10

func (d *Driver) reconnect(ctx context.Context, c **Client, cause error) error {
	if d.Progress != nil {
		fmt.Fprintf(d.Progress, "latentworker: the connection to %s was lost (%v); reconnecting\n", (*c).Addr(), cause)
	}
	nc, err := d.Reconnect(ctx, *c)
	if err != nil {
		return fmt.Errorf("the connection to %s was lost (%w) and reconnecting failed: %w", (*c).Addr(), cause, err)
	}
	*c = nc
	return nil
}

// runJob runs the uploaded script at path as a detached job and follows it
// to the end, reconnecting as run says. Without a reconnection it takes two
// commands: start and follow, then the exit status and the removal of the
// job and the script (*removed is then set).
func (d *Driver) runJob(ctx context.Context, c **Client, dt Detacher, name, path, secret string, stdout, stderr io.Writer, removed *bool) (err error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("%s script: random job name: %w", name, err)
	}
	dir := dt.JobDir(label(name), hex.EncodeToString(b[:]))
	defer func() {
		if *removed {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scriptRemoveTimeout)
		defer cancel()
		if ctx.Err() != nil {
			// Cancelled: the job would go on without us.
			_ = (*c).Run(rctx, dt.KillJob(dir), nil, nil, nil)
		}
		if rmErr := (*c).Run(rctx, dt.RemoveJob(dir), nil, nil, nil); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("%s script on %s: remove %s: %w", name, (*c).Addr(), dir, rmErr))
		}
	}()
	out, errs := &countingWriter{w: stdout}, &countingWriter{w: stderr}
	tail := &lineTail{}
	errs.tee = tail
	// The first attempt starts the job and follows it in one command.
	// After a reconnection the job may have started already: then it is
	// followed again from where it was.
	first := true
	if err := d.retry(ctx, c, func() error {
		if !first && (*c).Run(ctx, dt.JobStarted(dir), nil, nil, nil) == nil {
			return (*c).Run(ctx, dt.FollowJob(dir, out.n, errs.n), nil, out, errs)
		}
		first = false
		var stdin io.Reader
		if secret != "" {
			stdin = strings.NewReader(secret + "\n")
		}
		return (*c).Run(ctx, dt.StartJob(path, dir), stdin, out, errs)
	}, nil); err != nil {
		return fmt.Errorf("%s script: %w", name, err)
	}
	var st []byte
	finished := false
	if err := d.retry(ctx, c, func() (err error) {
		if finished {
			// A reconnection after the first try: the job may be gone
			// with its status.
			st, err = (*c).Output(ctx, dt.JobStatus(dir), nil)
			return err
		}
		finished = true
		st, err = (*c).Output(ctx, dt.FinishJob(dir, path), nil)
		if err == nil {
			*removed = true
		}
		return err
	}, nil); err != nil {
		return fmt.Errorf("%s script: exit status: %w", name, err)
	}
	status, err := strconv.Atoi(strings.TrimSpace(string(st)))
	if err != nil {
		return fmt.Errorf("%s script: exit status %q: %w", name, st, err)
	}
	if status != 0 {
		return fmt.Errorf("%s script: %w", name, &ExitError{Addr: (*c).Addr(), Command: "sh " + path + " (detached)", Status: status, Stderr: tail.String()})
	}
	return nil
}

// countingWriter passes writes on and counts the bytes, so that a job is
// followed again from where it was.
type countingWriter struct {
	w   io.Writer
	tee io.Writer
	n   int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.tee != nil {
		_, _ = c.tee.Write(p)
	}
	if c.w == nil {
		return len(p), nil
	}
	if _, err := c.w.Write(p); err != nil {
		return len(p), err
	}
	return len(p), nil
}

// scriptPath returns a new, unguessable path for a script called name.
func scriptPath(sh Shell, name string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random script name: %w", err)
	}
	return sh.ScriptPath(label(name), hex.EncodeToString(b[:])), nil
}

// label reduces a script's name to [a-z0-9-], at most 32 characters.
func label(name string) string {
	var clean strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case clean.Len() >= 32:
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			clean.WriteRune(r)
		case clean.Len() > 0 && !strings.HasSuffix(clean.String(), "-"):
			clean.WriteByte('-')
		}
	}
	l := strings.Trim(clean.String(), "-")
	if l == "" {
		l = "script"
	}
	return l
}

func checkPassword(p string) error {
	if p == "" || strings.ContainsAny(p, "\n\r\x00") {
		return ErrInvalidPassword
	}
	return nil
}

const redacted = "[redacted]"

// redact hides secret in err's message. An *ExitError in the chain has
// its stderr tail redacted in place, so that it is clean when unwrapped.
func redact(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		ee.Stderr = strings.ReplaceAll(ee.Stderr, secret, redacted)
	}
	if !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, redacted), err: err}
}

// redactedError is an error whose message had a secret removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// lineWriter passes whole lines to w, with secret replaced by
// "[redacted]". A line longer than maxProgressLine is passed in pieces.
type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	secret string
	buf    []byte
}

const maxProgressLine = 64 * 1024

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		switch {
		case i >= 0:
			l.emit(l.buf[:i])
			l.buf = l.buf[i+1:]
		case len(l.buf) >= maxProgressLine:
			l.emit(l.buf[:maxProgressLine])
			l.buf = l.buf[maxProgressLine:]
		default:
			return len(p), nil
		}
	}
}

// Flush passes on a last line without a newline.
func (l *lineWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineWriter) emit(line []byte) {
	if lw, ok := l.w.(*lockedWriter); l.w == nil || ok && lw.w == nil {
		return
	}
	s := strings.TrimSuffix(string(line), "\r")
	if l.secret != "" {
		s = strings.ReplaceAll(s, l.secret, redacted)
	}
	// Progress is best effort: a failing writer must not fail the script.
	_, _ = io.WriteString(l.w, s+"\n")
}

// lockedWriter serialises writes from the stdout and stderr copiers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
