package scripts

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Length limits for the free-text fields of Worker.
const (
	MaxNameLen       = 50 // buildbot refuses longer worker names
	MaxAdminNameLen  = 128
	MaxAdminEmailLen = 254
	MaxHostInfoLen   = 1024
	maxHostnameLen   = 253
)

// Worker describes the buildbot worker that Setup creates and Verify checks.
// The password is not part of it: it travels on the scripts' stdin.
type Worker struct {
	Name       string // buildbot worker name
	Master     string // host:port of the buildmaster; an IPv6 literal in brackets
	AdminName  string // contact name for info/admin
	AdminEmail string // contact address; written obfuscated: "user AT example.com"
	HostInfo   string // info/host text, one line
	// Version pins the buildbot-worker that pip installs (e.g. "4.3.0");
	// "" installs the newest. The distribution's package ignores it.
	Version string
}

// FieldError reports a Worker field that Validate rejected.
type FieldError struct {
	Field string // name of the Worker field, e.g. "Master"
	Value string // the rejected value (never a secret)
	Rule  string // what the field allows
}

// Error says which field is wrong and what it allows.
func (e *FieldError) Error() string {
	v := e.Value
	if utf8.RuneCountInString(v) > 80 {
		v = string([]rune(v)[:80]) + "..."
	}
	return fmt.Sprintf("worker %s %q: %s", e.Field, v, e.Rule)
}

// Validate checks every field and returns nil or the errors.Join of one
// *FieldError per invalid field, each naming the field and what it allows:
//   - Name: what buildbot accepts as a worker name (an identifier of at
//     most 50 characters, not debug, change or status), in ASCII: 1-50
//     letters, digits, '_' or '-', starting with a letter or '_'
//   - Master: host:port, host a DNS name, an IPv4 literal or a bracketed
//     IPv6 literal ([2001:db8::1]:9989), port 1-65535
//   - AdminName, HostInfo: printable text (no control or format characters),
//     no leading or trailing space, length-capped; AdminName has no '<' or '>'
//   - AdminEmail: local@domain, printable, no spaces, '<' or '>'
func (w Worker) Validate() error {
	var errs []error
	add := func(field, value, rule string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Rule: rule})
	}
	if !validName(w.Name) {
		add("Name", w.Name, nameRule)
	}
	if _, _, err := splitMaster(w.Master); err != nil {
		add("Master", w.Master, err.Error())
	}
	if err := checkText(w.AdminName, MaxAdminNameLen); err != nil {
		add("AdminName", w.AdminName, err.Error())
	} else if strings.ContainsAny(w.AdminName, "<>") {
		add("AdminName", w.AdminName, "must not contain '<' or '>'")
	}
	if err := checkEmail(w.AdminEmail); err != nil {
		add("AdminEmail", w.AdminEmail, err.Error())
	}
	if err := checkText(w.HostInfo, MaxHostInfoLen); err != nil {
		add("HostInfo", w.HostInfo, err.Error())
	}
	if w.Version != "" && !ValidVersion(w.Version) {
		add("Version", w.Version, versionRule)
	}
	return errors.Join(errs...)
}

// ObfuscateEmail writes the '@' of an address as " AT ", as the buildbot
// worker guide recommends for the public info/admin file:
// "user@example.com" becomes "user AT example.com". Only the last '@' is
// replaced; a string without '@' is returned unchanged.
func ObfuscateEmail(email string) string {
	i := strings.LastIndexByte(email, '@')
	if i < 0 {
		return email
	}
	return email[:i] + " AT " + email[i+1:]
}

// InfoAdmin is the line Setup writes to info/admin: "Name <user AT host>".
func (w Worker) InfoAdmin() string {
	return w.AdminName + " <" + ObfuscateEmail(w.AdminEmail) + ">"
}

// MasterHostPort returns the buildmaster host (an IPv6 literal without
// brackets) and port from Master, as buildbot.tac stores them.
func (w Worker) MasterHostPort() (string, int, error) {
	return splitMaster(w.Master)
}

const versionRule = "must be empty (the newest) or a release version such as 4.3.0: digits and dots, optionally followed by a pre-, post- or dev-release suffix (letters, digits, '.', '!' or '+')"

// ValidVersion reports whether v is a buildbot-worker version pip can pin:
// a PEP 440 public or local version written with digits, letters, '.', '!'
// and '+', starting with a digit ("4.3.0", "3.11.9", "4.0.0rc1").
func ValidVersion(v string) bool {
	if len(v) < 1 || len(v) > 64 || v[0] < '0' || v[0] > '9' {
		return false
	}
	for _, c := range []byte(v) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '!', c == '+':
		default:
			return false
		}
	}
	return true
}

// nameRule says what validName allows.
var nameRule = fmt.Sprintf("must be a worker name buildbot accepts: 1-%d letters, digits, '_' or '-', starting with a letter or '_', not debug, change or status", MaxNameLen)

// validName reports whether s is a worker name buildbot accepts (its
// identifier rule, at most 50 characters, not a reserved name), kept to
// ASCII and not starting with '-', since it reaches command lines.
func validName(s string) bool {
	if len(s) < 1 || len(s) > MaxNameLen || s == "debug" || s == "change" || s == "status" {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
		case i > 0 && ('0' <= c && c <= '9' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func splitMaster(s string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, errors.New("must be host:port, with an IPv6 address in brackets ([2001:db8::1]:9989)")
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != portStr {
		return "", 0, errors.New("port must be a number from 1 to 65535")
	}
	bracketed := strings.HasPrefix(s, "[")
	if addr, err := netip.ParseAddr(host); err == nil {
		switch {
		case addr.Zone() != "":
			return "", 0, errors.New("host must not have an IPv6 zone")
		case addr.Is4() && bracketed:
			return "", 0, errors.New("only IPv6 addresses go in brackets")
		case addr.Is6() && !bracketed:
			return "", 0, errors.New("an IPv6 address must be in brackets")
		case addr.Is4In6():
			return "", 0, errors.New("host must be an IPv4 or IPv6 address, not an IPv4-mapped one")
		}
		return host, port, nil
	}
	if bracketed || !validHostname(host) {
		return "", 0, errors.New("host must be a DNS name (letters, digits, '-' and '.'), an IPv4 address or a bracketed IPv6 address")
	}
	return host, port, nil
}

func validHostname(h string) bool {
	if len(h) < 1 || len(h) > maxHostnameLen {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) < 1 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	// An all-numeric last label is a mistyped IPv4 address, not a name.
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

func checkText(s string, limit int) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case !utf8.ValidString(s):
		return errors.New("must be valid UTF-8")
	case utf8.RuneCountInString(s) > limit:
		return fmt.Errorf("must be at most %d characters", limit)
	case strings.TrimSpace(s) != s:
		return errors.New("must not start or end with white space")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("must be printable text: %U is not allowed", r)
		}
	}
	return nil
}

func checkEmail(s string) error {
	if err := checkText(s, MaxAdminEmailLen); err != nil {
		return err
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return errors.New("must be an address of the form user@example.com")
	}
	if strings.ContainsAny(s, " <>") {
		return errors.New("must not contain spaces, '<' or '>'")
	}
	return nil
}
