package provision

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// readPubs reads an authorized_keys file from testdata.
func readPubs(t *testing.T, name string) []ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var keys []ssh.PublicKey
	for len(b) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			break
		}
		keys = append(keys, k)
		b = rest
	}
	if len(keys) == 0 {
		t.Fatalf("no keys in testdata/%s", name)
	}
	return keys
}

func readConsole(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fingerprintsOf(keys []ssh.PublicKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, ssh.FingerprintSHA256(k))
	}
	slices.Sort(out)
	return out
}

func TestParseConsoleHostKeys(t *testing.T) {
	ubuntu := readConsole(t, "ubuntu-console.txt")
	debian := readConsole(t, "debian-console.txt")
	lab := readConsole(t, "lab-console.txt")
	fpOnly := cut(t, string(lab), beginKeys, endKeys)
	keysOnly := cut(t, string(lab), beginFingerprints, endFingerprints)
	// Console output cut in the middle of the keys block keeps what was
	// printed before the cut.
	truncated := string(ubuntu[:strings.Index(string(ubuntu), "ecdsa-sha2-nistp256 AAAA")])
	truncated = cut(t, truncated, beginFingerprints, endFingerprints)

	tests := []struct {
		name     string
		console  string
		wantKeys []ssh.PublicKey // all of these accepted
		wantFPs  int             // len(Fingerprints)
		wantKs   int             // len(Keys)
		algs     []string
		err      error
	}{
		{"ubuntu", string(ubuntu), readPubs(t, "ubuntu.pub"), 3, 3,
			[]string{"ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"}, nil},
		{"debian", string(debian), readPubs(t, "debian.pub"), 3, 3,
			[]string{"ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"}, nil},
		{"lab", string(lab), readPubs(t, "lab.pub"), 2, 2, []string{"ssh-ed25519", "ecdsa-sha2-nistp256"}, nil},
		{"fingerprints only", fpOnly, readPubs(t, "lab.pub"), 2, 0, []string{"ssh-ed25519", "ecdsa-sha2-nistp256"}, nil},
		{"keys only", keysOnly, readPubs(t, "lab.pub"), 0, 2, []string{"ssh-ed25519", "ecdsa-sha2-nistp256"}, nil},
		{"truncated keys block", truncated, readPubs(t, "ubuntu.pub")[:1], 0, 1, []string{"ssh-ed25519"}, nil},
		{"two boots", string(lab) + string(lab), readPubs(t, "lab.pub"), 2, 2, []string{"ssh-ed25519", "ecdsa-sha2-nistp256"}, nil},
		{"no block", "[    1.0] Linux version 6.1.0\nlogin: \n", nil, 0, 0, nil, ErrNoHostKeys},
		{"empty", "", nil, 0, 0, nil, ErrNoHostKeys},
		{"md5 only", "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n" +
			"ec2: 2048 1f:2e:3d:4c:5b:6a:79:88:97:a6:b5:c4:d3:e2:f1:00 /etc/ssh/ssh_host_rsa_key.pub (RSA)\n" +
			"ec2: -----END SSH HOST KEY FINGERPRINTS-----\n", nil, 0, 0, nil, ErrNoHostKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseConsoleHostKeys([]byte(tt.console))
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseConsoleHostKeys(%s) error = %v; want %v", tt.name, err, tt.err)
			}
			if len(h.Fingerprints) != tt.wantFPs || len(h.Keys) != tt.wantKs || len(h.Types) != len(h.Fingerprints) {
				t.Errorf("ParseConsoleHostKeys(%s) = %d fingerprints, %d types, %d keys; want %d, %d, %d",
					tt.name, len(h.Fingerprints), len(h.Types), len(h.Keys), tt.wantFPs, tt.wantFPs, tt.wantKs)
			}
			for _, k := range tt.wantKeys {
				if err := h.Check("host:22", nil, k); err != nil {
					t.Errorf("Check(%s) = %v; want nil", ssh.FingerprintSHA256(k), err)
				}
			}
			if len(tt.wantKeys) > 0 {
				if got, want := h.fingerprints(), fingerprintsOf(tt.wantKeys); !slices.Equal(sorted(got), want) {
					t.Errorf("fingerprints = %v; want %v", got, want)
				}
			}
			if got := h.Algorithms(); !slices.Equal(got, tt.algs) {
				t.Errorf("Algorithms() = %v; want %v", got, tt.algs)
			}
			if err := h.Check("host:22", nil, newKey(t)); !errors.Is(err, ErrHostKeyMismatch) {
				t.Errorf("Check(other key) = %v; want ErrHostKeyMismatch", err)
			}
		})
	}
}

// cut removes the lines from the one containing begin to the one
// containing end.
func cut(t *testing.T, s, begin, end string) string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.SplitAfter(s, "\n") {
		switch {
		case strings.Contains(l, begin):
			in = true
		case strings.Contains(l, end):
			in = false
		case !in:
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestParseFingerprintLine(t *testing.T) {
	const fp = "Rj1DAsP0YXkg0O5/rKcDWKWAb0l6b59j87y3X0i79Cg"
	tests := []struct {
		line, fp, typ string
		ok            bool
	}{
		{"ec2: 256 SHA256:" + fp + " root@ip-172-31-23-4 (ED25519)", "SHA256:" + fp, "ssh-ed25519", true},
		{"<14>Nov 23 10:01:03 ec2: 384 SHA256:" + fp + " root@h (ECDSA)", "SHA256:" + fp, "ecdsa-sha2-nistp384", true},
		{"[   12.3] cloud-init[123]: ec2: 3072 SHA256:" + fp + " no comment (RSA)", "SHA256:" + fp, "ssh-rsa", true},
		{"ec2: 256 SHA256:" + fp + " root@h", "SHA256:" + fp, "", true},
		{"ec2: 256 SHA256:" + fp + "= root@h (ED25519)", "SHA256:" + fp, "ssh-ed25519", true},
		{"ec2: 256 SHA256:" + fp[:40] + " root@h (ED25519)", "", "", false},
		{"ec2: 2048 1f:2e:3d:4c:5b:6a:79:88:97:a6:b5:c4:d3:e2:f1:00 root@h (RSA)", "", "", false},
		{"ec2: #############################################################", "", "", false},
	}
	for _, tt := range tests {
		fp, typ, ok := parseFingerprintLine(tt.line)
		if fp != tt.fp || typ != tt.typ || ok != tt.ok {
			t.Errorf("parseFingerprintLine(%q) = %q, %q, %v; want %q, %q, %v", tt.line, fp, typ, ok, tt.fp, tt.typ, tt.ok)
		}
	}
}

func TestHostKeysCheckError(t *testing.T) {
	pinned := newKey(t)
	h := HostKeys{Fingerprints: []string{ssh.FingerprintSHA256(pinned)}, Types: []string{"ssh-ed25519"}}
	other := newKey(t)
	err := h.Check("198.51.100.7:22", nil, other)
	var hk *HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("Check(other) = %v; want *HostKeyError", err)
	}
	msg := err.Error()
	for _, want := range []string{"198.51.100.7:22", ssh.FingerprintSHA256(other), ssh.FingerprintSHA256(pinned), "console output"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Check(other) error %q does not name %q", msg, want)
		}
	}
	if err := (HostKeys{}).Check("h:22", nil, pinned); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("empty HostKeys Check = %v; want ErrHostKeyMismatch", err)
	}
}

func TestTrustOnFirstUse(t *testing.T) {
	var warned []string
	cb := TrustOnFirstUse(func(host string, key ssh.PublicKey) {
		warned = append(warned, host+" "+ssh.FingerprintSHA256(key))
	})
	first, second := newKey(t), newKey(t)
	if err := cb("h:22", nil, first); err != nil {
		t.Fatalf("first use = %v; want nil", err)
	}
	if err := cb("h:22", nil, first); err != nil {
		t.Fatalf("same key again = %v; want nil", err)
	}
	err := cb("h:22", nil, second)
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Want[0] != ssh.FingerprintSHA256(first) {
		t.Fatalf("other key after first use = %v; want *HostKeyError wanting the first key", err)
	}
	if want := []string{"h:22 " + ssh.FingerprintSHA256(first)}; !slices.Equal(warned, want) {
		t.Errorf("warnings = %q; want %q", warned, want)
	}
}
