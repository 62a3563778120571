package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const pw = "correct-horse-battery-staple"

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret(pw)
	if s.Reveal() != pw {
		t.Fatalf("Reveal() = %q; want the value", s.Reveal())
	}
	type exported struct{ Password Secret }
	type unexported struct{ password Secret }
	values := map[string]any{
		"Secret":            s,
		"*Secret":           &s,
		"exported field":    exported{s},
		"&exported field":   &exported{s},
		"unexported field":  unexported{s},
		"&unexported field": &unexported{s},
		"slice":             []Secret{s},
		"map":               map[string]Secret{"k": s},
		"any slice":         []any{s},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%10.3s", "%-20v"} {
			if got := fmt.Sprintf(verb, v); strings.Contains(got, pw) || strings.Contains(got, fmt.Sprintf("%x", pw)) || strings.Contains(got, fmt.Sprintf("%X", pw)) {
				t.Errorf("Sprintf(%q, %s) = %q; must not contain the secret", verb, name, got)
			}
		}
		if got := fmt.Sprint(v) + fmt.Sprintln(v); strings.Contains(got, pw) {
			t.Errorf("Sprint(%s) = %q; must not contain the secret", name, got)
		}
		if b, err := json.Marshal(v); err == nil && strings.Contains(string(b), pw) {
			t.Errorf("json.Marshal(%s) = %s; must not contain the secret", name, b)
		}
	}
	for verb, want := range map[string]string{"%v": "(redacted)", "%s": "(redacted)", "%q": `"(redacted)"`, "%#v": "(redacted)"} {
		if got := fmt.Sprintf(verb, s); got != want {
			t.Errorf("Sprintf(%q, secret) = %q; want %q", verb, got, want)
		}
	}
	if b, err := json.Marshal(exported{s}); err != nil || string(b) != `{"Password":"(redacted)"}` {
		t.Errorf("json.Marshal(exported) = %s, %v; want {\"Password\":\"(redacted)\"}", b, err)
	}
	if b, err := json.Marshal(map[Secret]int{s: 1}); err != nil || strings.Contains(string(b), pw) {
		t.Errorf("json.Marshal(map key) = %s, %v", b, err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "password", s, "nested", exported{s})
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "password", s)
	if strings.Contains(buf.String(), pw) {
		t.Errorf("slog output %q contains the secret", buf.String())
	}
	if s.String() != "(redacted)" || s.GoString() != "(redacted)" {
		t.Errorf("String() = %q, GoString() = %q; want (redacted)", s.String(), s.GoString())
	}
	if b, err := s.MarshalText(); err != nil || string(b) != "(redacted)" {
		t.Errorf("MarshalText() = %q, %v; want (redacted)", b, err)
	}
	var zero Secret
	if !zero.IsZero() || zero.Reveal() != "" || fmt.Sprint(zero) != "(redacted)" {
		t.Errorf("zero Secret: IsZero %v, Reveal %q, prints %q", zero.IsZero(), zero.Reveal(), fmt.Sprint(zero))
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	const env = "LATENTWORKER_TEST_PASSWORD"
	file := func(content string, mode os.FileMode) string {
		return writeFile(t, t.TempDir(), "pw", content, mode)
	}
	prompted := func(v string, err error) func(string) (string, error) {
		return func(label string) (string, error) {
			if !strings.Contains(label, "aws-debian-x86") {
				t.Errorf("prompt label %q does not name the worker", label)
			}
			return v, err
		}
	}
	for _, tc := range []struct {
		desc    string
		envVal  string
		file    string
		prompt  func(string) (string, error)
		want    string // the password; "" = an error
		errHas  string
		errIsNP bool
	}{
		{desc: "env", envVal: pw, file: file("other\n", 0o600), prompt: prompted("p", nil), want: pw},
		{desc: "file", file: file(pw+"\n", 0o600), prompt: prompted("p", nil), want: pw},
		{desc: "file crlf", file: file(pw+"\r\n", 0o400), want: pw},
		{desc: "file no newline", file: file(pw, 0o600), want: pw},
		{desc: "prompt", prompt: prompted(pw+"\n", nil), want: pw},
		{desc: "nothing", errHas: "no worker password: set " + env, errIsNP: true},
		{desc: "file mode", file: file(pw+"\n", 0o644), prompt: prompted("p", nil), errHas: "must be mode 0600 or stricter: it is 0644"},
		{desc: "file missing", file: filepath.Join(dir, "nope"), errHas: "password file " + filepath.Join(dir, "nope")},
		{desc: "file empty", file: file("\n", 0o600), errHas: "it is empty", errIsNP: true},
		{desc: "file two lines", file: file(pw+"\n"+pw+"\n", 0o600), errHas: "must be a single line"},
		{desc: "env control", envVal: pw + "\x1b", errHas: "environment variable " + env + ": must not contain control characters"},
		{desc: "prompt error", prompt: prompted("", errors.New("no terminal")), errHas: "worker password from the prompt: no terminal"},
		{desc: "prompt empty", prompt: prompted("\n", nil), errHas: "from the prompt", errIsNP: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Setenv(env, tc.envVal)
			c := valid()
			c.Worker.PasswordEnv = env
			c.Worker.PasswordFile = tc.file
			s, err := c.Password(tc.prompt)
			if tc.want != "" {
				if err != nil || s.Reveal() != tc.want {
					t.Errorf("Password() = %q, %v; want the password", s.Reveal(), err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Password() = %v, nil; want an error containing %q", s, tc.errHas)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Password() = %v; want an error containing %q", err, tc.errHas)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("Password() = %v; must not contain the password", err)
			}
			if errors.Is(err, ErrNoPassword) != tc.errIsNP {
				t.Errorf("errors.Is(%v, ErrNoPassword) = %v; want %v", err, !tc.errIsNP, tc.errIsNP)
			}
		})
	}
}
