package handoff

import (
	"crypto/rsa"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/platform"
)

// CheckImportable refuses a public key EC2's ImportKeyPair would refuse,
// or that the platform's instances cannot use: EC2 takes RSA (2048 bits
// and more here; AWS also takes 1024, which is too weak to hand off) and
// ED25519 keys, not ECDSA or security keys (sk-...), and Windows
// instances only RSA. p may be nil (no platform known: Linux's rules).
func CheckImportable(k ssh.PublicKey, p *platform.Platform) error {
	windows := p != nil && p.Family == platform.Windows
	switch k.Type() {
	case ssh.KeyAlgoED25519:
		if windows {
			return fmt.Errorf("%s instances take only RSA key pairs (EC2 refuses ED25519 for Windows): give an RSA public key (ssh-keygen -t rsa -b 4096)", p.Title)
		}
		return nil
	case ssh.KeyAlgoRSA:
		if ck, ok := k.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
				return fmt.Errorf("an RSA key of %d bits: give one of 2048 bits or more (ssh-keygen -t rsa -b 4096)", rk.N.BitLen())
			}
		}
		return nil
	}
	return fmt.Errorf("a %s key: EC2 imports only RSA and ED25519 key pairs (ssh-keygen -t ed25519)", k.Type())
}
