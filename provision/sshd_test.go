package provision

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

const sshdPath = "/usr/sbin/sshd"

// requireSSHD skips the test when the real OpenSSH sshd cannot run here
// (missing, or not root), and fails it instead when CI=true.
func requireSSHD(t *testing.T) {
	t.Helper()
	var why string
	if _, err := os.Stat(sshdPath); err != nil {
		why = "OpenSSH sshd is not installed: " + err.Error()
	} else if os.Geteuid() != 0 {
		why = "the sshd tests log in as root and must run as root"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: not skipping)")
	}
	t.Skip(why)
}

// sshd is a real OpenSSH server on 127.0.0.1 for one test.
type sshd struct {
	t        *testing.T
	dir      string
	addr     string
	hostKeys []ssh.PublicKey // ed25519 first, then ecdsa
	signer   ssh.Signer      // a client key listed in authorized_keys
	log      *syncBuffer
}

// newSSHD prepares a server with fresh host keys and a client key on a
// free port. It does not start it; start does. Cleanup stops it and
// everything it forked.
func newSSHD(t *testing.T) *sshd {
	t.Helper()
	requireSSHD(t)
	dir := t.TempDir()
	s := &sshd{t: t, dir: dir, log: &syncBuffer{}}

	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var hostKeyLines []string
	for name, priv := range map[string]any{"ssh_host_ed25519_key": edPriv, "ssh_host_ecdsa_key": ecPriv} {
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		hostKeyLines = append(hostKeyLines, "HostKey "+filepath.Join(dir, name))
	}
	for _, priv := range []any{edPriv, ecPriv} {
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		s.hostKeys = append(s.hostKeys, signer.PublicKey())
	}

	_, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if s.signer, err = ssh.NewSignerFromKey(clientPriv); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(s.signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(s.addr)

	config := strings.Join(append(hostKeyLines,
		"ListenAddress 127.0.0.1:"+port,
		"AuthorizedKeysFile "+filepath.Join(dir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"Subsystem sftp internal-sftp",
		"PidFile none",
		"StrictModes no",
		"LogLevel VERBOSE",
	), "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs sshd in the foreground; t.Cleanup stops it, its connection
// processes and their children.
func (s *sshd) start() {
	t := s.t
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", filepath.Join(s.dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		for _, pid := range descendants(cmd.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
	})
}

// target returns a Target for the server as root, checking host keys
// with hostKey and retrying quickly.
func (s *sshd) target(hostKey ssh.HostKeyCallback) Target {
	return Target{
		Addr:       s.addr,
		User:       "root",
		Signer:     s.signer,
		HostKey:    hostKey,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
}

// pinned is the server's HostKeys as its console would print them.
func (s *sshd) pinned() HostKeys {
	var b strings.Builder
	b.WriteString("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n")
	for _, k := range s.hostKeys {
		kind := map[string]string{ssh.KeyAlgoED25519: "ED25519", ssh.KeyAlgoECDSA256: "ECDSA"}[k.Type()]
		fmt.Fprintf(&b, "ec2: 256 %s root@test (%s)\n", ssh.FingerprintSHA256(k), kind)
	}
	b.WriteString("ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
	h, err := ParseConsoleHostKeys([]byte(b.String()))
	if err != nil {
		s.t.Fatal(err)
	}
	return h
}

// dial connects with the pinned host keys and closes the client at the
// end of the test.
func (s *sshd) dial(ctx context.Context) *Client {
	s.t.Helper()
	h := s.pinned()
	tg := s.target(h.Check)
	tg.HostKeyAlgorithms = h.Algorithms()
	c, err := Dial(ctx, tg)
	if err != nil {
		s.t.Fatalf("Dial(%s) = %v", s.addr, err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// descendants lists the processes below pid, deepest last.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and ')'.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for p, pp := range parent {
			if pp == cur {
				out = append(out, p)
				queue = append(queue, p)
			}
		}
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
