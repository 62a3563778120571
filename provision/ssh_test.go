package provision

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestDialPinnedHostKey(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	out, err := c.Output(ctx, "echo hello; id -un", nil)
	if err != nil {
		t.Fatalf("Output = %v", err)
	}
	if got, want := string(out), "hello\nroot\n"; got != want {
		t.Errorf("Output = %q; want %q", got, want)
	}
}

// Pinned to the ECDSA key only, the client must ask for that algorithm
// (Algorithms), or the server would present its Ed25519 key.
func TestDialPinnedSubsetUsesAlgorithms(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ecdsaKey := s.hostKeys[1]
	h := HostKeys{Keys: []ssh.PublicKey{ecdsaKey}}
	tg := s.target(h.Check)
	tg.HostKeyAlgorithms = h.Algorithms()
	c, err := Dial(testContext(t), tg)
	if err != nil {
		t.Fatalf("Dial pinned to ECDSA with Algorithms %v = %v", tg.HostKeyAlgorithms, err)
	}
	c.Close()
}

func TestDialWrongHostKeyFailsAtOnce(t *testing.T) {
	s := newSSHD(t)
	s.start()
	// Let the server come up so that the only failure is the key.
	s.dial(testContext(t)).Close()

	wrong := HostKeys{Keys: []ssh.PublicKey{newKey(t)}}
	tg := s.target(wrong.Check)
	retries := 0
	tg.Retrying = func(int, error, time.Duration) { retries++ }
	start := time.Now()
	_, err := Dial(testContext(t), tg)
	var hk *HostKeyError
	if !errors.As(err, &hk) || !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("Dial with a wrong pinned key = %v; want a *HostKeyError", err)
	}
	if retries != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("Dial with a wrong pinned key retried %d times in %v; want no retry", retries, time.Since(start))
	}
	if !strings.Contains(err.Error(), s.addr) || !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("error %q does not name the address and the mismatch", err)
	}
}

func TestDialTrustOnFirstUse(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	var warnings []string
	tofu := TrustOnFirstUse(func(host string, key ssh.PublicKey) {
		warnings = append(warnings, host+" "+ssh.FingerprintSHA256(key))
	})
	for i := range 2 { // a reconnection, as after a reboot
		c, err := Dial(ctx, s.target(tofu))
		if err != nil {
			t.Fatalf("Dial #%d with TOFU = %v", i+1, err)
		}
		c.Close()
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], s.addr+" SHA256:") {
		t.Errorf("warnings = %q; want one for %s", warnings, s.addr)
	}
	// Another server (other host keys) at the same callback: refused.
	other := newSSHD(t)
	other.start()
	other.dial(ctx).Close()
	if _, err := Dial(ctx, other.target(tofu)); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("Dial of another server with the same TOFU callback = %v; want ErrHostKeyMismatch", err)
	}
}

func TestDialRetriesUntilSSHDStarts(t *testing.T) {
	s := newSSHD(t)
	var attempts atomic.Int32
	var lastErr atomic.Value
	refusedTwice := make(chan struct{})
	tg := s.target(s.pinned().Check)
	tg.Retrying = func(n int, err error, _ time.Duration) {
		attempts.Store(int32(n))
		lastErr.Store(err.Error())
		if n == 2 {
			close(refusedTwice)
		}
	}
	type result struct {
		c   *Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := Dial(testContext(t), tg)
		done <- result{c, err}
	}()
	// The instance is still booting: start sshd only after two refusals.
	select {
	case <-refusedTwice:
	case r := <-done:
		t.Fatalf("Dial returned before sshd started: %v", r.err)
	}
	s.start()
	r := <-done
	if r.err != nil {
		t.Fatalf("Dial while sshd starts late = %v", r.err)
	}
	r.c.Close()
	if attempts.Load() < 2 {
		t.Errorf("Dial retried %d times before sshd started; want at least 2", attempts.Load())
	}
	if msg, _ := lastErr.Load().(string); !strings.Contains(msg, "refused") {
		t.Errorf("last retried error %q; want connection refused", msg)
	}
}

func TestDialAuthFailureRetriesAFewTimes(t *testing.T) {
	s := newSSHD(t)
	s.start()
	s.dial(testContext(t)).Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	stranger, _ := ssh.NewSignerFromKey(priv)
	tg := s.target(s.pinned().Check)
	tg.Signer = stranger
	tg.AuthAttempts = 3
	retries := 0
	tg.Retrying = func(int, error, time.Duration) { retries++ }
	_, err := Dial(testContext(t), tg)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("Dial with an unknown key = %v; want ErrAuth", err)
	}
	if retries != 2 {
		t.Errorf("Dial with an unknown key retried %d times; want 2 (3 attempts)", retries)
	}
}

func TestRunExitStatusAndStdin(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	var stdout, stderr strings.Builder
	cmd := `cat; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo "line $i" >&2; done; exit 3`
	err := c.Run(ctx, cmd, strings.NewReader("from stdin\n"), &stdout, &stderr)
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Run = %v; want *ExitError", err)
	}
	if ee.Status != 3 || ee.Signal != "" || ee.Addr != s.addr || ee.Command != cmd {
		t.Errorf("ExitError = %+v; want status 3 from %s", ee, s.addr)
	}
	if !strings.HasSuffix(ee.Stderr, "line 20") || strings.Contains(ee.Stderr, "line 5\n") {
		t.Errorf("ExitError.Stderr = %q; want the last %d lines", ee.Stderr, stderrTailLines)
	}
	if got := stdout.String(); got != "from stdin\n" {
		t.Errorf("stdout = %q; want the stdin echoed", got)
	}
	if !strings.Contains(stderr.String(), "line 1\n") {
		t.Errorf("stderr writer got %q; want every line", stderr.String())
	}
	if !strings.Contains(err.Error(), "exited with status 3") || !strings.Contains(err.Error(), "line 20") {
		t.Errorf("Run error %q lacks the status or the stderr tail", err)
	}
	if err := c.Run(ctx, "true", nil, nil, nil); err != nil {
		t.Errorf("Run(true) = %v", err)
	}
}

func TestRunContextCancelEndsCommand(t *testing.T) {
	s := newSSHD(t)
	s.start()
	c := s.dial(testContext(t))
	ctx, cancel := context.WithTimeout(testContext(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	// A long command that reports progress, as the scripts do. With this
	// root login sshd ignores the signal: closing the channel ends it.
	err := c.Run(ctx, "exec sh -c 'while :; do echo waiting; sleep 0.1; done' lw-cancel-4321", nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run(sleep) with a 500ms context = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %v after the context ended", d)
	}
	// The remote command is gone too (sshd is local here).
	deadline := time.Now().Add(5 * time.Second)
	for running("lw-cancel-4321") {
		if time.Now().After(deadline) {
			t.Fatal("remote command still running 5s after cancel")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The connection is still usable.
	if err := c.Run(testContext(t), "true", nil, nil, nil); err != nil {
		t.Errorf("Run after a cancelled Run = %v", err)
	}
}

// running reports whether a process on this host has marker as an
// argument.
func running(marker string) bool {
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && strings.Contains(string(b), "\x00"+marker+"\x00") {
			return true
		}
	}
	return false
}

func TestUpload(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	dir := t.TempDir()
	content := []byte("#!/bin/sh\necho 'it''s here'\n\x00binary\xff")
	for _, mode := range []os.FileMode{0o700, 0o640} {
		path := filepath.Join(dir, "it's "+mode.String())
		if err := c.Upload(ctx, path, content, mode); err != nil {
			t.Fatalf("Upload(%q, %v) = %v", path, mode, err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(content) {
			t.Errorf("uploaded content = %q, %v; want %q", got, err, content)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("uploaded mode = %v, %v; want %v", fi.Mode().Perm(), err, mode)
		}
		// Never replaces an existing file.
		if err := c.Upload(ctx, path, []byte("other"), mode); err == nil {
			t.Errorf("second Upload(%q) = nil; want an error", path)
		}
		if got, _ := os.ReadFile(path); string(got) != string(content) {
			t.Errorf("second Upload changed the file to %q", got)
		}
	}
	// Nor writes through a symlink.
	link := filepath.Join(dir, "link")
	target := filepath.Join(dir, "target")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(ctx, link, content, 0o600); err == nil {
		t.Errorf("Upload through a dangling symlink = nil; want an error")
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("Upload through a symlink created its target")
	}
}

func TestBootID(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	sh, err := ShellFor(debian12, c.User())
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.BootID(ctx, sh)
	if err != nil {
		t.Fatalf("BootID = %v", err)
	}
	want, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Errorf("BootID = %q; want %q", got, want)
	}
}

// TestReboot fakes the reboot on the local sshd: the boot ID comes from a
// file that the "reboot" command changes a little later, after killing
// its own connection as a real reboot would.
func TestReboot(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	idFile := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(idFile, []byte("old-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := s.pinned()
	tg := s.target(h.Check)
	sh := &POSIXShell{User: "root", BootIDCmd: "cat " + shellQuote(idFile)}
	// The fake boot ID changes only once reboot has redialled and seen the
	// old one (the marker), whatever the machine's load.
	marker := filepath.Join(t.TempDir(), "redialled")
	dials := 0
	redial := func(ctx context.Context) (*Client, error) {
		dials++
		c, err := Dial(ctx, tg)
		if dials == 3 { // the first redial after the reboot command is done
			_ = os.WriteFile(marker, nil, 0o644)
		}
		return c, err
	}
	c, err := redial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fakeReboot := "(while [ ! -e " + shellQuote(marker) + " ]; do sleep 0.1; done; echo new-boot > " + shellQuote(idFile) + ".tmp; mv " + shellQuote(idFile) + ".tmp " +
		shellQuote(idFile) + ") </dev/null >/dev/null 2>&1 & kill -9 $PPID"
	nc, err := reboot(ctx, c, sh, redial, fakeReboot, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("reboot = %v", err)
	}
	defer nc.Close()
	if id, err := nc.BootID(ctx, sh); err != nil || id != "new-boot" {
		t.Errorf("BootID after reboot = %q, %v; want new-boot", id, err)
	}
	if dials < 3 {
		t.Errorf("reboot redialled %d times; want it to have seen the old boot ID first", dials-1)
	}
	// The old client is closed.
	if err := c.Run(ctx, "true", nil, nil, nil); err == nil {
		t.Errorf("Run on the pre-reboot client = nil; want an error")
	}

	// A refused reboot (a status, not a dropped connection) is an error.
	c2, err := redial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reboot(ctx, c2, sh, redial, "echo 'Failed to reboot' >&2; exit 1", time.Millisecond); err == nil ||
		!strings.Contains(err.Error(), "Failed to reboot") {
		t.Errorf("reboot refused = %v; want the refusal", err)
	}
}

// TestDialBackoff checks the waits between attempts and that ctx bounds
// Dial, with a fake clock (synctest) and a dialer that is always refused.
func TestDialBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		tg := Target{
			Addr: "192.0.2.1:22", User: "admin", Signer: testSigner(t),
			HostKey: HostKeys{}.Check,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				at = append(at, time.Since(start))
				return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
			},
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := Dial(ctx, tg)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Dial = %v; want DeadlineExceeded and the last error (refused)", err)
		}
		want := []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 3500 * time.Millisecond,
			7500 * time.Millisecond, 15500 * time.Millisecond, 25500 * time.Millisecond}
		if len(at) != len(want) {
			t.Fatalf("attempts at %v; want %v", at, want)
		}
		for i := range want {
			if at[i] != want[i] {
				t.Errorf("attempt %d at %v; want %v", i+1, at[i], want[i])
			}
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("Dial returned after %v; want at the 30s deadline", d)
		}
	})
}

// TestDialHandshakeEOFRetried: a server that closes the connection during
// the handshake (sshd not ready) is retried, not taken for an auth
// failure or a host-key problem.
func TestDialHandshakeEOFRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		tg := Target{
			Addr: "192.0.2.1:22", User: "admin", Signer: testSigner(t),
			HostKey: HostKeys{}.Check,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				n++
				client, server := net.Pipe()
				go func() {
					go io.Copy(io.Discard, server)
					io.WriteString(server, "SSH-2.0-OpenSSH_9.2\r\n")
					server.Close()
				}()
				return client, nil
			},
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := Dial(ctx, tg)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrAuth) || errors.Is(err, ErrHostKeyMismatch) {
			t.Errorf("Dial = %v; want DeadlineExceeded only", err)
		}
		if n < 3 {
			t.Errorf("Dial made %d attempts; want retries", n)
		}
	})
}

func TestDialRequiresHostKeyCallback(t *testing.T) {
	if _, err := Dial(t.Context(), Target{Addr: "h:22", User: "u", Signer: testSigner(t)}); err == nil {
		t.Error("Dial without HostKey = nil; want an error")
	}
}

func testSigner(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
