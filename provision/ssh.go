package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// ErrAuth is returned (wrapped) by Dial when the server refused the key
// on every allowed attempt.
var ErrAuth = errors.New("SSH authentication failed")

// Defaults for the zero values of Target's fields.
const (
	DefaultAttemptTimeout = 20 * time.Second
	DefaultAuthAttempts   = 5
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultKeepAlive      = 15 * time.Second
)

// Target says how to reach a machine over SSH.
type Target struct {
	Addr   string     // host:port
	User   string     // login user, e.g. scripts.DefaultUser(platform)
	Signer ssh.Signer // the private key; it never leaves the process
	// Signers, when Signer is nil, offers keys from elsewhere (an SSH
	// agent's).
	Signers func() ([]ssh.Signer, error)
	// HostKey checks the server's host key: HostKeys.Check for keys read
	// from the console, else TrustOnFirstUse. Required: there is no
	// insecure default. An error from it ends Dial at once.
	HostKey ssh.HostKeyCallback
	// HostKeyAlgorithms, when set, restricts the host key algorithms the
	// client accepts (HostKeys.Algorithms), so that the server presents a
	// key that was pinned.
	HostKeyAlgorithms []string
	// ProbeHostKey is for a HostKey that knows a key but not its type (a
	// fingerprint): when the server presents a key of another type, Dial
	// asks it at once for a key of each other type it has, in the order
	// of algorithmPreference, before it reports a mismatch naming every
	// key the server offered. Client.HostKeyAlgorithms then says the type
	// that matched, for the next connections.
	ProbeHostKey bool

	// AttemptTimeout bounds one attempt: TCP connect and SSH handshake.
	AttemptTimeout time.Duration
	// AuthAttempts is how many handshakes in a row may end in an
	// authentication failure before Dial gives up (cloud-init may not have
	// installed the key yet when sshd starts).
	AuthAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts, which
	// doubles from MinBackoff up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// KeepAlive is the interval of keepalive requests on the connection; a
	// connection that answers none for three intervals is closed, so that
	// a command on a vanished machine fails instead of hanging. Negative
	// disables keepalives.
	KeepAlive time.Duration
	// DialContext opens the TCP connection; nil means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Retrying, when set, is called before each wait with the number of the
	// attempt that failed, its error and the wait (for progress output).
	Retrying func(attempt int, err error, wait time.Duration)
}

// Client is an SSH connection to one machine. Its methods may be called
// concurrently; each Run uses its own session.
type Client struct {
	// OnCommand, when set, is told how long each Run took (benchmarks
	// split a bake's time between remote commands and the rest).
	OnCommand func(time.Duration)

	ssh        *ssh.Client
	addr, user string
	hostAlgos  []string
	stop       chan struct{}
	closeOnce  sync.Once
}

// HostKeyAlgorithms are the host key algorithms this connection was made
// with (nil: the library's defaults): give them to the next Target for the
// same machine so that it presents the same key without probing.
func (c *Client) HostKeyAlgorithms() []string { return c.hostAlgos }

// Addr is the address the client dialled, host:port.
func (c *Client) Addr() string { return c.addr }

// User is the login user.
func (c *Client) User() string { return c.user }

// Close closes the connection and ends its sessions. It is safe to call
// more than once.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.stop)
		err = c.ssh.Close()
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close SSH connection to %s: %w", c.addr, err)
	}
	return nil
}

// Dial connects to t.Addr and authenticates as t.User, retrying while the
// machine boots: refused or reset connections, timeouts and connections
// closed during the handshake are retried with backoff until ctx ends.
// A host key rejected by t.HostKey is returned at once (a *HostKeyError
// for this package's callbacks); an authentication failure is retried up
// to t.AuthAttempts times in a row and then wraps ErrAuth. When ctx ends,
// the error wraps both ctx's error and the last attempt's.
func Dial(ctx context.Context, t Target) (*Client, error) {
	if t.HostKey == nil {
		return nil, fmt.Errorf("ssh %s@%s: no host key callback", t.User, t.Addr)
	}
	if t.Signer == nil && t.Signers == nil {
		return nil, fmt.Errorf("ssh %s@%s: no private key", t.User, t.Addr)
	}
	t = t.withDefaults()
	authFailures := 0
	var offered []*HostKeyError // keys of the wrong type, while probing
	for attempt := 1; ; attempt++ {
		c, err := t.dialOnce(ctx)
		if err == nil {
			return c, nil
		}
		var hk hostKeyRejection
		var hke *HostKeyError
		var neg *ssh.AlgorithmNegotiationError
		switch {
		case errors.As(err, &hk) && t.ProbeHostKey && errors.As(hk.err, &hke):
			offered = append(offered, hke)
			if next := remainingAlgorithms(offered); len(next) > 0 {
				t.HostKeyAlgorithms = next
				continue
			}
			return nil, fmt.Errorf("ssh %s@%s: %w", t.User, t.Addr, probeMismatch(offered))
		case errors.As(err, &hk):
			return nil, fmt.Errorf("ssh %s@%s: %w", t.User, t.Addr, hk.err)
		case len(offered) > 0 && errors.As(err, &neg) && neg.What == "host key":
			// The server has no key of the types left.
			return nil, fmt.Errorf("ssh %s@%s: %w", t.User, t.Addr, probeMismatch(offered))
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s@%s: gave up after %d attempt(s): %w (last error: %w)", t.User, t.Addr, attempt, context.Cause(ctx), err)
		case errors.Is(err, ErrAuth):
			authFailures++
			if authFailures >= t.AuthAttempts {
				return nil, fmt.Errorf("ssh %s@%s: %d attempt(s): %w", t.User, t.Addr, authFailures, err)
			}
		default:
			authFailures = 0
		}
		wait := t.backoff(attempt)
		if t.Retrying != nil {
			t.Retrying(attempt, err, wait)
		}
		if cause := sleep(ctx, wait); cause != nil {
			return nil, fmt.Errorf("ssh %s@%s: gave up after %d attempt(s): %w (last error: %w)", t.User, t.Addr, attempt, cause, err)
		}
	}
}

func (t Target) withDefaults() Target {
	if t.AttemptTimeout <= 0 {
		t.AttemptTimeout = DefaultAttemptTimeout
	}
	if t.AuthAttempts <= 0 {
		t.AuthAttempts = DefaultAuthAttempts
	}
	if t.MinBackoff <= 0 {
		t.MinBackoff = DefaultMinBackoff
	}
	if t.MaxBackoff < t.MinBackoff {
		t.MaxBackoff = max(DefaultMaxBackoff, t.MinBackoff)
	}
	if t.KeepAlive == 0 {
		t.KeepAlive = DefaultKeepAlive
	}
	if t.DialContext == nil {
		t.DialContext = (&net.Dialer{}).DialContext
	}
	return t
}

// backoff is the wait after failed attempt n (1-based): MinBackoff doubled
// n-1 times, capped at MaxBackoff.
func (t Target) backoff(n int) time.Duration {
	d := t.MinBackoff
	for i := 1; i < n && d < t.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, t.MaxBackoff)
}

// sleep waits for d or until ctx ends, returning ctx's cause then.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timer.C:
		return nil
	}
}

// hostKeyRejection marks an attempt whose host key callback refused the
// server's key; err is the callback's error.
type hostKeyRejection struct{ err error }

func (e hostKeyRejection) Error() string { return e.err.Error() }
func (e hostKeyRejection) Unwrap() error { return e.err }

// dialOnce makes one attempt. It classifies a failure as a
// hostKeyRejection, as ErrAuth, or as anything else (retried).
func (t Target) dialOnce(ctx context.Context) (*Client, error) {
	actx, cancel := context.WithTimeout(ctx, t.AttemptTimeout)
	defer cancel()
	conn, err := t.DialContext(actx, "tcp", t.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// The handshake has no context: closing the connection ends it.
	stopClose := context.AfterFunc(actx, func() { conn.Close() })

	var rejected atomic.Pointer[error]
	var accepted atomic.Pointer[string] // the type of the key accepted
	var authTried atomic.Bool
	cfg := &ssh.ClientConfig{
		User: t.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			authTried.Store(true)
			if t.Signer == nil {
				return t.Signers()
			}
			return []ssh.Signer{t.Signer}, nil
		})},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := t.HostKey(hostname, remote, key)
			if err != nil {
				rejected.Store(&err)
			} else {
				typ := key.Type()
				accepted.Store(&typ)
			}
			return err
		},
		HostKeyAlgorithms: t.HostKeyAlgorithms,
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	closed := !stopClose()
	if err == nil && closed {
		sc.Close()
		err = actx.Err()
	}
	if err != nil {
		conn.Close()
		if p := rejected.Load(); p != nil {
			return nil, hostKeyRejection{*p}
		}
		if closed {
			return nil, fmt.Errorf("handshake: %w", context.Cause(actx))
		}
		// After the key exchange, a failure that is not the connection
		// going away is the server refusing our key.
		if authTried.Load() && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isNetError(err) {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c := &Client{
		ssh:       ssh.NewClient(sc, chans, reqs),
		addr:      t.Addr,
		user:      t.User,
		hostAlgos: t.HostKeyAlgorithms,
		stop:      make(chan struct{}),
	}
	if p := accepted.Load(); t.ProbeHostKey && p != nil {
		c.hostAlgos = algorithmsOfType(*p)
	}
	if t.KeepAlive > 0 {
		go c.keepAlive(t.KeepAlive)
	}
	return c, nil
}

// remainingAlgorithms are the host key algorithms, in order of preference,
// whose key types the server has not offered yet.
func remainingAlgorithms(offered []*HostKeyError) []string {
	var out []string
	for _, a := range algorithmPreference {
		seen := false
		for _, o := range offered {
			seen = seen || keyTypeOf(a) == o.Type
		}
		if !seen {
			out = append(out, a)
		}
	}
	return out
}

// algorithmsOfType are the host key algorithms of key type typ, in order
// of preference.
func algorithmsOfType(typ string) []string {
	var out []string
	for _, a := range algorithmPreference {
		if keyTypeOf(a) == typ {
			out = append(out, a)
		}
	}
	return out
}

// keyTypeOf is the key type (ssh.PublicKey.Type) of a host key algorithm:
// the rsa-sha2-* signatures are made with ssh-rsa keys.
func keyTypeOf(algo string) string {
	if algo == ssh.KeyAlgoRSASHA256 || algo == ssh.KeyAlgoRSASHA512 {
		return ssh.KeyAlgoRSA
	}
	return algo
}

// probeMismatch is the mismatch of a probe that found no matching key: the
// first error, naming every key the server offered.
func probeMismatch(offered []*HostKeyError) *HostKeyError {
	e := *offered[0]
	for _, o := range offered[1:] {
		e.Others = append(e.Others, o.Type+" "+o.Fingerprint)
	}
	return &e
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// keepAlive sends a keepalive request every interval and closes the
// connection when none is answered for three intervals.
func (c *Client) keepAlive(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	answered := make(chan error, 1)
	pending := false
	var since time.Time
	for {
		select {
		case <-c.stop:
			return
		case err := <-answered:
			pending = false
			if err != nil {
				return // the connection is gone; Wait will say so
			}
		case now := <-tick.C:
			if pending {
				if now.Sub(since) >= 3*interval {
					c.ssh.Close()
					return
				}
				continue
			}
			pending, since = true, now
			go func() {
				_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
				answered <- err
			}()
		}
	}
}

// stderrTailLines is how many trailing lines of stderr an ExitError keeps.
const (
	stderrTailLines = 15
	stderrTailBytes = 4096
)

// ExitError reports a remote command that exited with a non-zero status or
// was killed by a signal.
type ExitError struct {
	Addr    string // host:port
	Command string // the command string (which never holds a secret)
	Status  int    // exit status; -1 when killed by a signal
	Signal  string // the signal's name ("TERM") when killed by one
	Stderr  string // the last lines of the command's stderr
}

// Error names the command, the machine and the status, followed by the
// tail of stderr.
func (e *ExitError) Error() string {
	how := fmt.Sprintf("exited with status %d", e.Status)
	if e.Signal != "" {
		how = "was killed by signal " + e.Signal
	}
	msg := fmt.Sprintf("command %q on %s %s", e.Command, e.Addr, how)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += "; stderr ends:\n" + s
	}
	return msg
}

// Run runs cmd in a new session, with stdin (nil: empty) copied to it and
// its stdout and stderr written to stdout and stderr (nil: discarded).
//
// Contract: cmd is not secret. It shows in the remote process list, in
// sshd's logs and in errors. Anything secret must be passed on stdin.
//
// A non-zero exit returns an *ExitError with the status and the last lines
// of stderr. When ctx ends first, Run sends the command SIGTERM, closes the
// session and returns ctx's cause at once. OpenSSH delivers the signal only
// for a non-root login (it needs privilege separation; sudo passes it on);
// either way the command's stdout and stderr are closed, so a command that
// reports progress dies at its next write. One that is silent and ignores
// SIGTERM may go on running on the machine.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if c.OnCommand != nil {
		defer func(start time.Time) { c.OnCommand(time.Since(start)) }(time.Now())
	}
	sess, err := c.ssh.NewSession()
	if err != nil {
		return fmt.Errorf("run %q on %s: open session: %w", cmd, c.addr, err)
	}
	defer sess.Close()
	tail := &lineTail{}
	sess.Stdin = stdin
	sess.Stdout = stdout
	if stderr == nil {
		stderr = io.Discard
	}
	sess.Stderr = io.MultiWriter(tail, stderr)
	if err := sess.Start(cmd); err != nil {
		return fmt.Errorf("run %q on %s: %w", cmd, c.addr, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// sshd honours the signal only with privilege separation, that
		// is for a non-root login; closing the channel closes the
		// command's pipes, so it ends at its next write at the latest.
		_ = sess.Signal(ssh.SIGTERM)
		sess.Close()
		return fmt.Errorf("run %q on %s: %w", cmd, c.addr, context.Cause(ctx))
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Addr: c.addr, Command: cmd, Status: ee.ExitStatus(), Signal: ee.Signal(), Stderr: tail.String()}
	}
	if err != nil {
		return fmt.Errorf("run %q on %s: %w", cmd, c.addr, err)
	}
	return nil
}

// Output runs cmd like Run and returns its stdout.
func (c *Client) Output(ctx context.Context, cmd string, stdin io.Reader) ([]byte, error) {
	var out strings.Builder
	err := c.Run(ctx, cmd, stdin, &out, nil)
	return []byte(out.String()), err
}

// Upload writes content to a new file at path on the machine, with mode's
// permission bits, over SFTP: no shell is involved. The file is created
// exclusively (an existing file or symlink at path is an error) and its
// mode is set before any content is written, so it is never readable by
// others with content in it. It is owned by the login user. On error a
// partial file may remain.
func (c *Client) Upload(ctx context.Context, path string, content []byte, mode os.FileMode) (err error) {
	if path == "" || strings.ContainsAny(path, "\x00\n") {
		return fmt.Errorf("upload to %s: invalid path %q", c.addr, path)
	}
	if c.OnCommand != nil {
		defer func(start time.Time) { c.OnCommand(time.Since(start)) }(time.Now())
	}
	sc, err := sftp.NewClient(c.ssh)
	if err != nil {
		return fmt.Errorf("upload %s to %s: start SFTP: %w", path, c.addr, err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sc.Close()
		case <-done:
		}
	}()
	defer sc.Close()
	f, err := sc.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("upload %s to %s: %w", path, c.addr, errors.Join(context.Cause(ctx), err))
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("upload %s to %s: %w", path, c.addr, cerr)
		}
	}()
	if err := f.Chmod(mode.Perm()); err != nil {
		return fmt.Errorf("upload %s to %s: chmod: %w", path, c.addr, errors.Join(context.Cause(ctx), err))
	}
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("upload %s to %s: %w", path, c.addr, errors.Join(context.Cause(ctx), err))
	}
	return nil
}

// BootID runs sh's boot ID command and returns the one word it prints.
func (c *Client) BootID(ctx context.Context, sh Shell) (string, error) {
	out, err := c.Output(ctx, sh.BootID(), nil)
	if err != nil {
		return "", fmt.Errorf("read boot ID on %s: %w", c.addr, err)
	}
	id := strings.TrimSpace(string(out))
	if id == "" || strings.ContainsAny(id, " \n") {
		return "", fmt.Errorf("read boot ID on %s: unexpected output %q", c.addr, out)
	}
	return id, nil
}

// shellQuote quotes s as one single-quoted POSIX shell word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lineTail keeps the last stderrTailLines lines (at most stderrTailBytes)
// of what is written to it.
type lineTail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4*stderrTailBytes {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-stderrTailBytes:]...)
	}
	return len(p), nil
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimRight(string(t.buf), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > stderrTailLines {
		lines = lines[len(lines)-stderrTailLines:]
	}
	s = strings.Join(lines, "\n")
	if len(s) > stderrTailBytes {
		s = "..." + s[len(s)-stderrTailBytes:]
	}
	return s
}
