package handoff

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"
)

func TestWriteSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle")
	if err := WriteSecretFile(path, fixture(), false); err != nil {
		t.Fatalf("WriteSecretFile = %v; want nil", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o; want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	for _, want := range []string{testSecret, "AKIAIOSFODNN7EXAMPLE", "worker.EC2LatentWorker(", `"secret_access_key": "` + testSecret + `"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("secret file lacks %q", want)
		}
	}

	// O_EXCL without overwrite.
	if err := WriteSecretFile(path, fixture(), false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteSecretFile(existing, overwrite=false) = %v; want fs.ErrExist", err)
	}
	// Overwrite a 0600 file: replaced, still 0600, no temporary left.
	if err := WriteSecretFile(path, rotated(), true); err != nil {
		t.Errorf("WriteSecretFile(existing 0600, overwrite=true) = %v; want nil", err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "AKIAI44QH8DHBEXAMPLE") {
		t.Errorf("overwritten file does not hold the new bundle")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after overwrite = %04o; want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries after overwrite; want 1", len(ents))
	}

	// Refuse a file others can read, even with overwrite, and leave it.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecretFile(path, fixture(), true); !errors.Is(err, ErrUnsafeFile) {
		t.Errorf("WriteSecretFile(0644 file, overwrite=true) = %v; want ErrUnsafeFile", err)
	}
	// Refuse a symbolic link, with or without overwrite.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	for _, overwrite := range []bool{false, true} {
		if err := WriteSecretFile(link, fixture(), overwrite); err == nil {
			t.Errorf("WriteSecretFile(symlink, overwrite=%v) = nil; want an error", overwrite)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a write through the symbolic link created its target")
	}

	// Under a permissive umask the file is 0600 all the same.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	p2 := filepath.Join(dir, "bundle2")
	if err := WriteSecretFile(p2, fixture(), false); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p2); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode with umask 0 = %04o; want 0600", fi.Mode().Perm())
	}

	// No secret, no file.
	p3 := filepath.Join(dir, "bundle3")
	if err := WriteSecretFile(p3, refreshed(), false); !errors.Is(err, ErrNoSecret) {
		t.Errorf("WriteSecretFile(no secret) = %v; want ErrNoSecret", err)
	}
	if _, err := os.Lstat(p3); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WriteSecretFile(no secret) left a file")
	}
}

// decrypt reads an armored age file with id.
func decrypt(t *testing.T, ciphertext []byte, id age.Identity) []byte {
	t.Helper()
	r, err := age.Decrypt(armor.NewReader(bytes.NewReader(ciphertext)), id)
	if err != nil {
		t.Fatalf("age.Decrypt: %v", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEncryptTo(t *testing.T) {
	plain, err := Full(fixture())
	if err != nil {
		t.Fatal(err)
	}

	x, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edID, err := agessh.NewEd25519Identity(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	edSSH, err := ssh.NewPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaID, err := agessh.NewRSAIdentity(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaSSH, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	authorized := func(k ssh.PublicKey) string {
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " admin@example.org"
	}
	recipients := []string{x.Recipient().String(), authorized(edSSH), authorized(rsaSSH)}

	ct, err := EncryptTo(recipients, plain)
	if err != nil {
		t.Fatalf("EncryptTo = %v; want nil", err)
	}
	if !bytes.HasPrefix(ct, []byte("-----BEGIN AGE ENCRYPTED FILE-----\n")) {
		t.Errorf("EncryptTo output is not armored:\n%.80s", ct)
	}
	if bytes.Contains(ct, []byte(testSecret)) {
		t.Errorf("EncryptTo output contains the secret in clear")
	}
	for name, id := range map[string]age.Identity{"x25519": x, "ssh-ed25519": edID, "ssh-rsa": rsaID} {
		if got := decrypt(t, ct, id); !bytes.Equal(got, plain) {
			t.Errorf("decrypting with the %s identity gave other bytes than the plaintext", name)
		}
	}
	// One recipient alone works, and another identity cannot read it.
	ct, err = EncryptTo(recipients[1:2], plain)
	if err != nil {
		t.Fatal(err)
	}
	if got := decrypt(t, ct, edID); !bytes.Equal(got, plain) {
		t.Errorf("ssh-ed25519 alone: decrypted text differs")
	}
	if _, err := age.Decrypt(armor.NewReader(bytes.NewReader(ct)), x); err == nil {
		t.Errorf("age.Decrypt with a non-recipient identity = nil error; want one")
	}

	for _, bad := range [][]string{
		nil,
		{"age1notarecipient"},
		{"ssh-dss AAAAB3NzaC1kc3MAAACBAP"},
		{"ssh-ed25519 AAAAnotbase64!"},
		{x.String()},
		{recipients[0], "bob@example.org"},
	} {
		_, err := EncryptTo(bad, plain)
		if !errors.Is(err, ErrRecipient) {
			t.Errorf("EncryptTo(%q) = %v; want ErrRecipient", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), "AGE-SECRET-KEY-") {
			t.Errorf("EncryptTo(identity) error echoes the private key: %v", err)
		}
	}
}

// TestSecretStaysPut renders the bundle every way and checks that the
// secret appears only where it was asked for: the secret file, and the
// text and JSON rendered with the secret shown.
func TestSecretStaysPut(t *testing.T) {
	for _, b := range []Bundle{fixture(), rotated()} {
		mustNot := map[string]string{}
		must := map[string]string{}
		text, err := Text(b, TextOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mustNot["Text"] = text
		text, _ = Text(b, TextOptions{SecretFile: "/x"})
		mustNot["Text(SecretFile)"] = text
		text, _ = Text(b, TextOptions{ShowSecret: true})
		must["Text(ShowSecret)"] = text
		js, _ := JSON(b, false)
		mustNot["JSON(false)"] = string(js)
		js, _ = JSON(b, true)
		must["JSON(true)"] = string(js)
		snippet, _ := MasterCfgSnippet(b)
		mustNot["MasterCfgSnippet"] = snippet
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			mustNot["fmt "+verb] = fmt.Sprintf(verb, b)
		}
		// Errors about the bundle never quote the secret.
		bad := b
		bad.WorkerName = "1bad"
		mustNot["Validate error"] = fmt.Sprint(bad.Validate())
		mustNot["JSON error"] = fmt.Sprint(func() error { _, err := JSON(bad, true); return err }())
		mustNot["Text error"] = fmt.Sprint(func() error { _, err := Text(bad, TextOptions{ShowSecret: true}); return err }())
		mustNot["WriteSecretFile error"] = fmt.Sprint(WriteSecretFile(filepath.Join(t.TempDir(), "x"), bad, false))

		path := filepath.Join(t.TempDir(), "bundle")
		if err := WriteSecretFile(path, b, false); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		must["secret file"] = string(data)

		for name, s := range mustNot {
			if strings.Contains(s, testSecret) {
				t.Errorf("%s of %s contains the secret", name, b.WorkerName)
			}
		}
		for name, s := range must {
			if !strings.Contains(s, testSecret) {
				t.Errorf("%s of %s lacks the secret", name, b.WorkerName)
			}
		}
	}
}
