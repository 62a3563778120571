package provision

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/latentworker/latentworker/platform"
	"golang.org/x/crypto/ssh"
)

// ErrNoHostKeys is returned (wrapped) by ParseConsoleHostKeys when the
// console output has no usable host key block. The caller may then fall
// back to TrustOnFirstUse, with its warning.
var ErrNoHostKeys = errors.New("no SSH host keys in the console output")

// ErrHostKeyMismatch is what a *HostKeyError unwraps to.
var ErrHostKeyMismatch = errors.New("SSH host key mismatch")

// HostKeyError reports a server whose host key is not the expected one. Dial
// never retries it.
type HostKeyError struct {
	Host        string   // the address dialled, host:port
	Fingerprint string   // SHA256 fingerprint of the key the server offered
	Type        string   // type of the offered key, e.g. "ssh-ed25519"
	Want        []string // SHA256 fingerprints that would have been accepted
	Source      string   // where Want comes from: "console output" or "first connection"
	// Others are the server's other keys, "TYPE SHA256:...", when it was
	// asked for every type it has (Target.ProbeHostKey).
	Others []string
}

// Error names the host, the offered key and the expected ones.
func (e *HostKeyError) Error() string {
	offered := e.Type + " " + e.Fingerprint
	for _, o := range e.Others {
		offered += ", " + o
	}
	return fmt.Sprintf("SSH host key mismatch for %s: the server offered %s, expected %s (from the %s); "+
		"the address may not belong to the instance that was launched, or its host keys changed",
		e.Host, offered, strings.Join(e.Want, " or "), e.Source)
}

// Unwrap returns ErrHostKeyMismatch.
func (e *HostKeyError) Unwrap() error { return ErrHostKeyMismatch }

// HostKeys are the host keys an instance printed on its console. Either
// list may be empty; a key is accepted when its SHA256 fingerprint is in
// Fingerprints or it equals one of Keys.
type HostKeys struct {
	// Fingerprints holds SHA256 fingerprints as ssh.FingerprintSHA256
	// writes them ("SHA256:" and 43 base64 characters), from the
	// "SSH HOST KEY FINGERPRINTS" block.
	Fingerprints []string
	// Types holds, for each entry of Fingerprints, the SSH key algorithm
	// named by the line ("ssh-ed25519", "ecdsa-sha2-nistp256", ...), or ""
	// when the line did not say.
	Types []string
	// Keys holds the public keys of the "SSH HOST KEY KEYS" block.
	Keys []ssh.PublicKey
}

// Len is the number of entries (fingerprints plus keys).
func (h HostKeys) Len() int { return len(h.Fingerprints) + len(h.Keys) }

// Check is an ssh.HostKeyCallback that accepts key only when it is one of
// h's. It returns a *HostKeyError otherwise.
func (h HostKeys) Check(hostname string, _ net.Addr, key ssh.PublicKey) error {
	fp := ssh.FingerprintSHA256(key)
	if slices.Contains(h.Fingerprints, fp) {
		return nil
	}
	wire := key.Marshal()
	for _, k := range h.Keys {
		if bytes.Equal(k.Marshal(), wire) {
			return nil
		}
	}
	return &HostKeyError{Host: hostname, Fingerprint: fp, Type: key.Type(), Want: h.fingerprints(), Source: "console output"}
}

// fingerprints lists every accepted fingerprint once, in order.
func (h HostKeys) fingerprints() []string {
	var out []string
	for _, f := range h.Fingerprints {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, k := range h.Keys {
		if f := ssh.FingerprintSHA256(k); !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// Algorithms returns the host key algorithms to offer so that the server
// presents a key h can check (for Target.HostKeyAlgorithms), Ed25519 first.
// It returns nil, meaning the library's defaults, when some entry's type is
// unknown: restricting would then risk excluding a pinned key.
func (h HostKeys) Algorithms() []string {
	var types []string
	for _, t := range h.Types {
		if t == "" {
			return nil
		}
		types = append(types, t)
	}
	for _, k := range h.Keys {
		types = append(types, k.Type())
	}
	if len(types) == 0 {
		return nil
	}
	var out []string
	for _, a := range algorithmPreference {
		for _, t := range types {
			if a == t || (t == ssh.KeyAlgoRSA && (a == ssh.KeyAlgoRSASHA512 || a == ssh.KeyAlgoRSASHA256)) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// algorithmPreference orders the host key algorithms Algorithms returns.
// ssh-rsa (SHA-1) is kept last for old servers; OpenSSH 8.8 and later
// offer rsa-sha2-* for the same key.
var algorithmPreference = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
	ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256,
	ssh.KeyAlgoRSA,
}

// Markers of cloud-init's blocks (write-ssh-key-fingerprints), matched
// anywhere in a line: the fingerprint block is usually written through
// logger, so its lines carry a prefix such as "ec2: ", "<14>Nov 23 10:00:00
// ec2: " or "[   12.3] cloud-init[123]: ec2: ".
const (
	beginFingerprints = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
	endFingerprints   = "-----END SSH HOST KEY FINGERPRINTS-----"
	beginKeys         = "-----BEGIN SSH HOST KEY KEYS-----"
	endKeys           = "-----END SSH HOST KEY KEYS-----"
)

var (
	// "256 SHA256:<43 base64> root@host (ED25519)"; the comment may be
	// anything ("no comment", a path), the kind in parentheses may be absent.
	fingerprintLine = regexp.MustCompile(`(?:^|\s)(\d+)\s+SHA256:([A-Za-z0-9+/]{43})=?(?:\s.*?)?(?:\(([A-Z0-9-]+)\))?\s*$`)
	// "ssh-ed25519 AAAA... root@host"
	keyLine = regexp.MustCompile(`(?:^|\s)((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(AAAA[A-Za-z0-9+/]+={0,3})(?:\s|$)`)
)

// ParseHostKeys extracts the SSH host keys an instance printed on its
// console the way its platform prints them (platform.HostKeySource). It
// returns an error wrapping ErrNoHostKeys when the console shows none, and
// always for a platform whose console never shows them.
func ParseHostKeys(source platform.HostKeySource, console []byte) (HostKeys, error) {
	switch source {
	case platform.CloudInit:
		return ParseConsoleHostKeys(console)
	case platform.FreeBSDConsole:
		return parseFreeBSDConsole(console)
	case platform.UserDataConsole:
		return parseUserDataConsole(console)
	}
	return HostKeys{}, fmt.Errorf("parse console host keys: %w (host key source %q)", ErrNoHostKeys, source)
}

// ParseConsoleHostKeys extracts the SSH host keys from EC2 console output
// (GetConsoleOutput, decoded). It reads every "SSH HOST KEY FINGERPRINTS"
// and "SSH HOST KEY KEYS" block cloud-init printed; either kind suffices.
// Lines inside a block that are not entries (other processes writing to the
// console at the same time, MD5 fingerprints of old cloud-init) are
// skipped, and an unterminated block (truncated output) keeps the entries
// before the cut. With no block or no usable entry it returns an error
// wrapping ErrNoHostKeys.
func ParseConsoleHostKeys(console []byte) (HostKeys, error) {
	var h HostKeys
	var in string // "", beginFingerprints or beginKeys
	blocks := 0
	for _, line := range strings.Split(string(console), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.Contains(line, beginFingerprints):
			in = beginFingerprints
			blocks++
			continue
		case strings.Contains(line, beginKeys):
			in = beginKeys
			blocks++
			continue
		case strings.Contains(line, endFingerprints), strings.Contains(line, endKeys):
			in = ""
			continue
		}
		switch in {
		case beginFingerprints:
			fp, typ, ok := parseFingerprintLine(line)
			if ok && !slices.Contains(h.Fingerprints, fp) {
				h.Fingerprints = append(h.Fingerprints, fp)
				h.Types = append(h.Types, typ)
			}
		case beginKeys:
			k, ok := parseKeyLine(line)
			if ok && !slices.ContainsFunc(h.Keys, func(o ssh.PublicKey) bool { return bytes.Equal(o.Marshal(), k.Marshal()) }) {
				h.Keys = append(h.Keys, k)
			}
		}
	}
	switch {
	case blocks == 0:
		return HostKeys{}, fmt.Errorf("parse console host keys: %w (no %q or %q block)", ErrNoHostKeys, beginFingerprints, beginKeys)
	case h.Len() == 0:
		return HostKeys{}, fmt.Errorf("parse console host keys: %w (%d block(s) without a SHA256 fingerprint or public key)", ErrNoHostKeys, blocks)
	}
	return h, nil
}

func parseFingerprintLine(line string) (fp, typ string, ok bool) {
	m := fingerprintLine.FindStringSubmatch(line)
	if m == nil {
		return "", "", false
	}
	if raw, err := base64.RawStdEncoding.DecodeString(m[2]); err != nil || len(raw) != 32 {
		return "", "", false
	}
	bits, _ := strconv.Atoi(m[1])
	return "SHA256:" + m[2], algorithmOf(m[3], bits), true
}

// algorithmOf maps ssh-keygen's key kind ("ED25519", "ECDSA", "RSA", ...)
// and size to the SSH algorithm name, or "" when unknown.
func algorithmOf(kind string, bits int) string {
	switch kind {
	case "ED25519":
		return ssh.KeyAlgoED25519
	case "RSA":
		return ssh.KeyAlgoRSA
	case "ECDSA":
		switch bits {
		case 256:
			return ssh.KeyAlgoECDSA256
		case 384:
			return ssh.KeyAlgoECDSA384
		case 521:
			return ssh.KeyAlgoECDSA521
		}
	case "ED25519-SK":
		return ssh.KeyAlgoSKED25519
	case "ECDSA-SK":
		return ssh.KeyAlgoSKECDSA256
	}
	return ""
}

func parseKeyLine(line string) (ssh.PublicKey, bool) {
	m := keyLine.FindStringSubmatch(line)
	if m == nil {
		return nil, false
	}
	raw, err := base64.StdEncoding.DecodeString(m[2])
	if err != nil {
		return nil, false
	}
	k, err := ssh.ParsePublicKey(raw)
	if err != nil || k.Type() != m[1] {
		return nil, false
	}
	return k, true
}

// TrustOnFirstUse returns an ssh.HostKeyCallback for an instance whose
// console showed no host keys. It accepts the first key it is shown,
// calls warn (when not nil) once with the address and that key, and from
// then on accepts only that key: a reconnection after a reboot that
// presents another key fails with a *HostKeyError. Use one callback per
// instance, for every connection to it. It is safe for concurrent use.
func TrustOnFirstUse(warn func(hostname string, key ssh.PublicKey)) ssh.HostKeyCallback {
	var mu sync.Mutex
	var seen ssh.PublicKey
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		mu.Lock()
		if seen == nil {
			seen = key
			mu.Unlock()
			if warn != nil {
				warn(hostname, key)
			}
			return nil
		}
		defer mu.Unlock()
		if bytes.Equal(seen.Marshal(), key.Marshal()) {
			return nil
		}
		return &HostKeyError{Host: hostname, Fingerprint: ssh.FingerprintSHA256(key), Type: key.Type(),
			Want: []string{ssh.FingerprintSHA256(seen)}, Source: "first connection"}
	}
}

// FreeBSD's ec2_loghostkey rc script (the base images' ec2-scripts) prints
// the fingerprints once sshd has its keys, through "logger -s -t ec2", so
// that each console line is "ec2: " and the text:
//
//	ec2: #############################################################
//	ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
//	ec2: 256 SHA256:<43 base64> root@freebsd (ED25519)
//	ec2: -----END SSH HOST KEY FINGERPRINTS-----
//	ec2: #############################################################
//
// There is no KEYS block. Unlike cloud-init's, whose lines come through
// logger or a journal with any prefix, a marker only counts as the whole
// line (after an optional "ec2: "), so that no other console writer's line
// that merely contains one opens or closes a block.
const freebsdTag = "ec2: "

// freebsdFingerprint is one line of ssh-keygen -l inside the block.
var freebsdFingerprint = regexp.MustCompile(`^(\d+) SHA256:([A-Za-z0-9+/]{43}) .*\(([A-Z0-9-]+)\)$`)

func parseFreeBSDConsole(console []byte) (HostKeys, error) {
	return parseMarked(console, freebsdTag, beginFingerprints, endFingerprints, func(line string) (string, string, bool) {
		m := freebsdFingerprint.FindStringSubmatch(line)
		if m == nil {
			return "", "", false
		}
		bits, _ := strconv.Atoi(m[1])
		return m[2], algorithmOf(m[3], bits), true
	})
}

// Markers of the block latentworker's Windows user data
// (scripts/windows/userdata.ps1.tmpl) writes on COM1: one "TYPE
// SHA256:<43 base64>" line per host key.
const (
	beginUserData = "-----BEGIN LATENTWORKER SSH HOST KEY FINGERPRINTS-----"
	endUserData   = "-----END LATENTWORKER SSH HOST KEY FINGERPRINTS-----"
)

var userDataFingerprint = regexp.MustCompile(`^((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+) SHA256:([A-Za-z0-9+/]{43})$`)

func parseUserDataConsole(console []byte) (HostKeys, error) {
	return parseMarked(console, "", beginUserData, endUserData, func(line string) (string, string, bool) {
		m := userDataFingerprint.FindStringSubmatch(line)
		if m == nil {
			return "", "", false
		}
		return m[2], m[1], true
	})
}

// parseMarked reads the fingerprints of every block between begin and end
// lines (whole lines, after an optional prefix and surrounding white
// space). entry parses one line inside a block into the fingerprint's
// base64 and its key algorithm; other lines inside a block (another
// writer's) are skipped. An unterminated block (truncated output) keeps
// its entries; the blocks of a later boot add to an earlier one's.
func parseMarked(console []byte, prefix, begin, end string, entry func(string) (string, string, bool)) (HostKeys, error) {
	var h HostKeys
	in := false
	blocks := 0
	for _, line := range strings.Split(string(console), "\n") {
		line = strings.TrimSpace(strings.TrimRight(line, "\r"))
		if prefix != "" {
			line = strings.TrimPrefix(line, prefix)
		}
		switch line {
		case begin:
			in = true
			blocks++
			continue
		case end:
			in = false
			continue
		}
		if !in {
			continue
		}
		b64, typ, ok := entry(line)
		if !ok {
			continue
		}
		if raw, err := base64.RawStdEncoding.DecodeString(b64); err != nil || len(raw) != 32 {
			continue
		}
		if fp := "SHA256:" + b64; !slices.Contains(h.Fingerprints, fp) {
			h.Fingerprints = append(h.Fingerprints, fp)
			h.Types = append(h.Types, typ)
		}
	}
	switch {
	case blocks == 0:
		return HostKeys{}, fmt.Errorf("parse console host keys: %w (no %q line)", ErrNoHostKeys, begin)
	case h.Len() == 0:
		return HostKeys{}, fmt.Errorf("parse console host keys: %w (%d block(s) without a SHA256 fingerprint)", ErrNoHostKeys, blocks)
	}
	return h, nil
}
