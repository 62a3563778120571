package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
)

// ErrRecipient is returned (wrapped) by EncryptTo for a recipient it
// cannot use.
var ErrRecipient = errors.New("unusable recipient")

// ParseRecipient parses one recipient of EncryptTo: an age X25519
// recipient ("age1..."), an age post-quantum hybrid recipient
// ("age1pq1..."), or an SSH public key in authorized_keys form
// ("ssh-ed25519 AAAA... comment" or "ssh-rsa AAAA... comment").
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	var (
		r   age.Recipient
		err error
	)
	switch {
	case strings.HasPrefix(s, "age1pq1"):
		r, err = age.ParseHybridRecipient(s)
	case strings.HasPrefix(s, "age1"):
		r, err = age.ParseX25519Recipient(s)
	case strings.HasPrefix(s, "ssh-ed25519 "), strings.HasPrefix(s, "ssh-rsa "):
		r, err = agessh.ParseRecipient(s)
	case strings.HasPrefix(s, "AGE-SECRET-KEY-"):
		// Never echo what looks like a private key.
		return nil, fmt.Errorf("%w: that is an age identity (a private key), not a recipient", ErrRecipient)
	default:
		return nil, fmt.Errorf("%w %q: want an age recipient (age1...) or an ssh-ed25519 or ssh-rsa public key", ErrRecipient, abbreviate(s))
	}
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrRecipient, abbreviate(s), err)
	}
	return r, nil
}

// abbreviate shortens a recipient for an error message.
func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// EncryptTo encrypts plaintext (normally Full's output) to every
// recipient (see ParseRecipient) with age, and returns it ASCII-armored
// ("-----BEGIN AGE ENCRYPTED FILE-----") so that it can be mailed. Any
// recipient holding the matching identity can decrypt it, e.g. with
// `age -d -i ~/.ssh/id_ed25519`. It fails, encrypting nothing, if there
// is no recipient or one cannot be parsed.
func EncryptTo(recipients []string, plaintext []byte) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, fmt.Errorf("encrypting the bundle: %w: none given", ErrRecipient)
	}
	rs := make([]age.Recipient, 0, len(recipients))
	for _, s := range recipients {
		r, err := ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("encrypting the bundle: %w", err)
		}
		rs = append(rs, r)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, rs...)
	if err != nil {
		return nil, fmt.Errorf("encrypting the bundle: %w", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("encrypting the bundle: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypting the bundle: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("encrypting the bundle: armor: %w", err)
	}
	return buf.Bytes(), nil
}
