package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// redacted is how a Secret prints.
const redacted = "(redacted)"

// Secret holds a value that must never be printed, logged or serialized:
// every fmt verb, JSON, text marshalling and slog show "(redacted)". The
// value sits behind a pointer so that even a Secret in an unexported struct
// field, which fmt prints without calling its methods, shows an address and
// not the value. Only Reveal returns it. The zero Secret is empty.
type Secret struct {
	p *string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{p: &s} }

// Reveal returns the value. Call it only where the value leaves the process
// for its destination (a script's stdin), never to print it.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// String returns "(redacted)".
func (s Secret) String() string { return redacted }

// GoString returns "(redacted)", for %#v.
func (s Secret) GoString() string { return redacted }

// Format prints "(redacted)" for every verb, quoted for %q.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", redacted)
		return
	}
	io.WriteString(f, redacted)
}

// MarshalJSON returns the JSON string "(redacted)".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "(redacted)".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes slog print "(redacted)".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// ErrNoPassword is returned (wrapped) when no source gives the worker
// password.
var ErrNoPassword = errors.New("no worker password")

// Password returns the worker password from the first source that has one:
// the environment variable named by worker.password_env (an empty variable
// counts as unset), then the file worker.password_file (mode 0600 or
// stricter; one line, a final newline is dropped), then prompt, called with
// a label naming the worker, which the caller reads without echo. A nil
// prompt means no prompting. A source that is configured but unusable (a
// file that is missing or readable by others) is an error, not a reason to
// fall through. The password must be one line without control characters.
// Errors name the source, never the value.
func (c *Config) Password(prompt func(label string) (string, error)) (Secret, error) {
	if name := c.Worker.PasswordEnv; name != "" {
		if v := os.Getenv(name); v != "" {
			return checkPassword(v, "environment variable "+name)
		}
	}
	if path := c.Worker.PasswordFile; path != "" {
		src := "password file " + path
		if err := checkPasswordFile(path); err != nil {
			return Secret{}, fmt.Errorf("worker password from %s: %w", src, err)
		}
		b, err := readSmallFile(path, 4*MaxPasswordLen+2)
		if err != nil {
			return Secret{}, fmt.Errorf("worker password from %s: %w", src, err)
		}
		v := strings.TrimSuffix(string(b), "\n")
		v = strings.TrimSuffix(v, "\r")
		return checkPassword(v, src)
	}
	if prompt != nil {
		v, err := prompt(fmt.Sprintf("Password of buildbot worker %s: ", c.Worker.Name))
		if err != nil {
			return Secret{}, fmt.Errorf("worker password from the prompt: %w", err)
		}
		return checkPassword(strings.TrimSuffix(strings.TrimSuffix(v, "\n"), "\r"), "the prompt")
	}
	env := c.Worker.PasswordEnv
	if env == "" {
		env = "(worker.password_env is empty)"
	}
	return Secret{}, fmt.Errorf("%w: set %s, or worker.password_file, or run where latentworker can prompt", ErrNoPassword, env)
}

// MaxPasswordLen bounds the worker password, in characters: buildbot sets
// no limit, but a password travels in buildbot.tac and on every
// connection, and a longer value is a mistake (a file that is not the
// password).
const MaxPasswordLen = 256

// checkPassword returns v as a Secret, or an error naming src (never v).
func checkPassword(v, src string) (Secret, error) {
	switch {
	case v == "":
		return Secret{}, fmt.Errorf("worker password from %s: %w: it is empty", src, ErrNoPassword)
	case !utf8.ValidString(v):
		return Secret{}, fmt.Errorf("worker password from %s: must be valid UTF-8", src)
	case utf8.RuneCountInString(v) > MaxPasswordLen:
		return Secret{}, fmt.Errorf("worker password from %s: must be at most %d characters", src, MaxPasswordLen)
	case strings.ContainsAny(v, "\r\n"):
		return Secret{}, fmt.Errorf("worker password from %s: must be a single line", src)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return Secret{}, fmt.Errorf("worker password from %s: must not contain control characters", src)
	}
	return NewSecret(v), nil
}
