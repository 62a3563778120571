package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSecretFromFile: the check finds a reused key's secret in its secret
// file whatever the bundle's format, and never in a file others can read.
func TestSecretFromFile(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	dir := t.TempDir()
	for name, body := range map[string]string{
		"json":   "text\n--- JSON ---\n{\n  \"secret_access_key\": \"" + secret + "\",\n}\n",
		"yaml":   "workers:\n  w:\n    aws_secret_access_key: " + secret + "\n",
		"python": "secret_identifier=\"" + secret + "\",\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := secretFromFile(p); got != secret {
			t.Errorf("%s: secretFromFile = %q; want the secret", name, got)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := secretFromFile(p); got != "" {
			t.Errorf("%s readable by others: secretFromFile = %q; want nothing", name, got)
		}
	}
	if got := secretFromFile(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("a missing file: %q", got)
	}
}
