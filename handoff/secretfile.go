package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNoSecret is returned (wrapped) by WriteSecretFile for a bundle
// without a secret access key: a reused key's secret is not known again.
var ErrNoSecret = errors.New("the bundle has no secret access key")

// ErrUnsafeFile is returned (wrapped) by WriteSecretFile when the file to
// overwrite is not a regular file or others may read it.
var ErrUnsafeFile = errors.New("unsafe secret file")

// Full returns the full bundle, secret included: the text of Text with
// the secret shown, then the master.cfg snippet, then the JSON. It is
// what WriteSecretFile writes and what the owner encrypts with EncryptTo
// to mail it. Never print it.
func Full(b Bundle) ([]byte, error) {
	if b.SecretAccessKey.IsZero() {
		return nil, fmt.Errorf("full bundle of worker %s: %w", b.WorkerName, ErrNoSecret)
	}
	text, err := Text(b, TextOptions{ShowSecret: true})
	if err != nil {
		return nil, fmt.Errorf("full bundle: %w", err)
	}
	snippet, err := MasterCfgSnippet(b)
	if err != nil {
		return nil, fmt.Errorf("full bundle: %w", err)
	}
	js, err := JSON(b, true)
	if err != nil {
		return nil, fmt.Errorf("full bundle: %w", err)
	}
	out := []byte(text)
	out = append(out, "\n--- master.cfg snippet ---\n\n"...)
	out = append(out, snippet...)
	out = append(out, "\n--- JSON ---\n\n"...)
	out = append(out, js...)
	return out, nil
}

// WriteSecretFile writes Full(b) to path, a file only its owner may read
// (mode 0600 whatever the umask). Without overwrite the file must not
// exist (O_EXCL) and a symbolic link at path is refused. With overwrite
// an existing file is replaced atomically (a new 0600 file renamed over
// it), but only if it is a regular file that neither group nor others may
// read or write (ErrUnsafeFile): a secret that was already exposed calls
// for a new key, not a quiet rewrite. On error no partial file is left
// behind. Errors name the path, never the secret.
func WriteSecretFile(path string, b Bundle, overwrite bool) error {
	data, err := Full(b)
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if !overwrite {
		return writeNew(path, data)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return writeNew(path, data)
	case err != nil:
		return fmt.Errorf("secret file %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("secret file %s: %w: not a regular file (%s)", path, ErrUnsafeFile, fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("secret file %s: %w: mode %04o lets others read or write it; "+
			"treat the key in it as exposed (rotate it) and remove the file", path, ErrUnsafeFile, fi.Mode().Perm())
	}
	// CreateTemp opens with O_EXCL and mode 0600.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := writeAndClose(f, data); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	return nil
}

// writeNew creates path with mode 0600, failing if it exists or is a
// symbolic link, and writes data to it; on error it removes what it
// created.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	if err := writeAndClose(f, data); err != nil {
		os.Remove(path)
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	return nil
}

// writeAndClose makes f mode 0600 (the umask can only clear bits, but say
// it anyway), writes data, syncs and closes f. It closes f on error too.
func writeAndClose(f *os.File, data []byte) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
