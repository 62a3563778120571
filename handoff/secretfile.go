package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoSecret is returned (wrapped) by WriteSecretFile for a bundle
// without a secret access key: a reused key's secret is not known again.
var ErrNoSecret = errors.New("the bundle has no secret access key")

// ErrUnsafeFile is returned (wrapped) by WriteSecretFile when the file to
// overwrite is not a regular file or others may read it.
var ErrUnsafeFile = errors.New("unsafe secret file")

// Sections of Document and Full, in this order.
const (
	SectionSettings    = "--- 2. private settings for settings.yaml (CPython's master) ---"
	SectionWorkerClass = "--- 3. the worker class change and the requirement (CPython's master, public) ---"
	SectionSnippet     = "--- 4. for other masters: master.cfg (buildbot 3.7 or 4.x) ---"
	SectionJSON        = "--- JSON ---"
)

// Document returns what handoff prints by default, in this order: Text
// (the guide's four items first, then the rest), the private settings
// fragment for a CPython-shaped master (SettingsFragment) only with
// opts.ShowSecret (otherwise a line naming opts.SecretFile), the public
// worker-class change and requirement (WorkerClassChange), and the generic
// master.cfg snippet for other masters (MasterCfgSnippet).
func Document(b Bundle, opts TextOptions) (string, error) {
	text, err := Text(b, opts)
	if err != nil {
		return "", err
	}
	settings := "Not shown here: it holds the worker password and the secret access key.\n"
	switch {
	case opts.ShowSecret:
		if settings, err = SettingsFragment(b); err != nil {
			return "", err
		}
	case opts.SecretFile != "":
		settings = "Not shown here (it holds the worker password and the secret access key):\nit is in the owner's file " + pyComment(opts.SecretFile) + " (mode 0600).\n"
	}
	class, err := WorkerClassChange(b)
	if err != nil {
		return "", err
	}
	snippet, err := MasterCfgSnippet(b)
	if err != nil {
		return "", err
	}
	return text + "\n" + SectionSettings + "\n\n" + settings +
		"\n" + SectionWorkerClass + "\n\n" + class +
		"\n" + SectionSnippet + "\n\n" + snippet, nil
}

// Full returns the full bundle, secrets included: Document with the
// secrets shown, then the JSON. It is what WriteSecretFile writes and what
// the owner encrypts with EncryptTo to mail it. Never print it.
func Full(b Bundle) ([]byte, error) {
	if b.SecretAccessKey.IsZero() {
		return nil, fmt.Errorf("full bundle of worker %s: %w", b.WorkerName, ErrNoSecret)
	}
	doc, err := Document(b, TextOptions{ShowSecret: true})
	if err != nil {
		return nil, fmt.Errorf("full bundle: %w", err)
	}
	js, err := JSON(b, true)
	if err != nil {
		return nil, fmt.Errorf("full bundle: %w", err)
	}
	out := []byte(doc)
	out = append(out, "\n"+SectionJSON+"\n\n"...)
	out = append(out, js...)
	return out, nil
}

// Section returns the body of the section headed title in a Document or
// Full output, without the blank line after the heading; "" if absent.
func Section(doc, title string) string {
	_, rest, ok := strings.Cut(doc, title+"\n\n")
	if !ok {
		return ""
	}
	if i := strings.Index(rest, "\n--- "); i >= 0 {
		rest = rest[:i+1]
	}
	return rest
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

// CheckSecretFile checks, before anything is created, that
// WriteSecretFile(path, _, overwrite) can write path: its directory exists
// and takes a new file, and path does not exist or, with overwrite, is a
// regular file neither group nor others may read or write. The errors
// name the path.
func CheckSecretFile(path string, overwrite bool) error {
	if err := CheckOutputDir(path); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("secret file %s: %w", path, err)
	case !overwrite:
		return fmt.Errorf("secret file %s: it exists", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("secret file %s: %w: not a regular file (%s)", path, ErrUnsafeFile, fi.Mode().Type())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("secret file %s: %w: mode %04o lets others read or write it; "+
			"treat the key in it as exposed (rotate it) and remove the file", path, ErrUnsafeFile, fi.Mode().Perm())
	}
	return nil
}

// CheckOutputDir checks that a file can be created beside path: path's
// directory exists and takes a new file (one is created and removed), and
// path itself is not a directory.
func CheckOutputDir(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s: is a directory; give a file name", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".latentworker-check-*")
	if err != nil {
		return fmt.Errorf("%s: cannot create a file in its directory: %w", path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// writeNew creates path with mode 0600, failing if it exists or is a
// symbolic link, and writes data to it; on error it removes what it
// created. O_CREATE|O_EXCL is enough for the link: open fails on a path
// that exists, a symbolic link included, and never follows one (POSIX;
// CreateFile's CREATE_NEW likewise on Windows).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
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
