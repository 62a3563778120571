package provision

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// A known_hosts that lists only the host's Ed25519 key (as ssh-keyscan -t
// ed25519 writes it, and as OpenSSH's client records it by default) must
// match: without the algorithms it lists, x/crypto/ssh asks for ECDSA
// first and the server presents its ECDSA key.
func TestKnownHostsEd25519Only(t *testing.T) {
	s := newSSHD(t)
	s.start()
	s.dial(testContext(t)).Close() // the server is up
	kh := filepath.Join(t.TempDir(), "known_hosts")
	host := "[127.0.0.1]:" + s.addr[strings.LastIndex(s.addr, ":")+1:]
	if err := os.WriteFile(kh, []byte(host+" "+string(ssh.MarshalAuthorizedKey(s.hostKeys[0]))), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, algos, err := KnownHosts(s.addr, kh)
	if err != nil {
		t.Fatalf("KnownHosts = %v", err)
	}
	if len(algos) != 1 || algos[0] != ssh.KeyAlgoED25519 {
		t.Errorf("KnownHosts algorithms = %v; want [%s]", algos, ssh.KeyAlgoED25519)
	}
	tg := s.target(cb)
	tg.HostKeyAlgorithms = algos
	c, err := Dial(testContext(t), tg)
	if err != nil {
		t.Fatalf("Dial with an Ed25519-only known_hosts = %v", err)
	}
	c.Close()

	// Before: the library's own preference meets the ECDSA key.
	tg.HostKeyAlgorithms = nil
	if _, err := Dial(testContext(t), tg); !errors.Is(err, ErrHostKeyMismatch) || !strings.Contains(err.Error(), "ecdsa") {
		t.Errorf("Dial without the listed algorithms = %v; want the mismatch with the ECDSA key this test reproduces", err)
	}
}

// A fingerprint does not say the key's type: with ProbeHostKey the server
// is asked for each type it has, so the fingerprint of either key works,
// and a wrong one names every key the server has.
func TestFingerprintProbesKeyTypes(t *testing.T) {
	s := newSSHD(t)
	s.start()
	s.dial(testContext(t)).Close()
	for i, want := range []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256} {
		tg := s.target(Fingerprint(ssh.FingerprintSHA256(s.hostKeys[i])))
		tg.ProbeHostKey = true
		c, err := Dial(testContext(t), tg)
		if err != nil {
			t.Fatalf("Dial with the %s fingerprint = %v", want, err)
		}
		if got := c.HostKeyAlgorithms(); len(got) == 0 || keyTypeOf(got[0]) != want {
			t.Errorf("HostKeyAlgorithms after the %s fingerprint = %v; want %s first", want, got, want)
		}
		c.Close()
	}
	tg := s.target(Fingerprint(ssh.FingerprintSHA256(newKey(t))))
	tg.ProbeHostKey = true
	start := time.Now()
	_, err := Dial(testContext(t), tg)
	var hk *HostKeyError
	if !errors.As(err, &hk) || len(hk.Others) != 1 {
		t.Fatalf("Dial with a wrong fingerprint = %v; want a *HostKeyError naming both of the server's keys", err)
	}
	for _, k := range s.hostKeys {
		if !strings.Contains(err.Error(), ssh.FingerprintSHA256(k)) {
			t.Errorf("error %q does not name the server's key %s", err, ssh.FingerprintSHA256(k))
		}
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("the probe took %s", time.Since(start))
	}
}

// Host's first connection is bounded: a port nobody listens on is an
// error after ConnectTimeout, not a retry forever.
func TestHostConnectBounded(t *testing.T) {
	start := time.Now()
	_, err := Host(testContext(t), HostOptions{
		Target:         Target{Addr: "127.0.0.1:1", User: "root", Signer: mustSigner(t), HostKey: Fingerprint("SHA256:x"), MinBackoff: 50 * time.Millisecond},
		ConnectTimeout: 500 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "no SSH connection within") {
		t.Fatalf("Host(127.0.0.1:1) = %v; want it to give up naming the bound", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Host(127.0.0.1:1) gave up after %s; want about 0.5s", d)
	}
}

func mustSigner(t *testing.T) ssh.Signer {
	t.Helper()
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
