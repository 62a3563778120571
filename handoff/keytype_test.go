package handoff

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/platform"
)

func TestCheckImportable(t *testing.T) {
	pub := func(k any) ssh.PublicKey {
		t.Helper()
		p, err := ssh.NewPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	big, _ := rsa.GenerateKey(rand.Reader, 2048)
	debian, _ := platform.Lookup("debian-12")
	windows, _ := platform.Lookup("windows-2025")
	for _, tc := range []struct {
		name string
		key  ssh.PublicKey
		p    *platform.Platform
		want string // "" accepted, else part of the error
	}{
		{"ed25519", pub(edPub), debian, ""},
		{"rsa 2048", pub(&big.PublicKey), debian, ""},
		{"rsa 2048 windows", pub(&big.PublicKey), windows, ""},
		{"ed25519 windows", pub(edPub), windows, "only RSA"},
		{"ecdsa", pub(&ec.PublicKey), debian, "only RSA and ED25519"},
		{"rsa 1024", pub(&small.PublicKey), debian, "1024 bits"},
	} {
		err := CheckImportable(tc.key, tc.p)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckImportable(%s) = %v; want %q", tc.name, err, tc.want)
		}
	}
}
