// Package image owns the lab's root filesystems: the Debian base image built
// once with debootstrap and cached, and the layers CreateImage captures from
// instances (a copy of the instance's overlay upper directory, scrubbed of
// per-instance identity). It does not boot anything (package machine does)
// and does not know about EC2 IDs.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Suite is the Debian release of the base image.
const Suite = "bookworm"

// Packages are the packages debootstrap includes in the base image: what a
// Debian cloud AMI has that provisioning relies on.
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3",
	"ca-certificates", "procps", "iproute2", "curl",
}

// DefaultUser is the base image's login user, as on Debian's AMIs.
const DefaultUser = "admin"

// prepVersion changes whenever prepareBase changes, so caches are rebuilt.
const prepVersion = "3"

// BaseKey identifies a base image build: suite, packages and preparation.
func BaseKey() string {
	h := sha256.Sum256([]byte(Suite + "\n" + strings.Join(Packages, ",") + "\n" + prepVersion))
	return hex.EncodeToString(h[:6])
}

// EnsureBase returns the directory of the cached base rootfs under cacheDir,
// building it with debootstrap first when it is not there (about two minutes;
// later calls return at once). log receives progress lines.
//
// Labs started at once (tests run side by side) share the cache: one builds
// while the others wait on a lock, and a complete base is never replaced,
// since running instances have it as their overlay's lowest layer.
func EnsureBase(ctx context.Context, cacheDir string, log io.Writer) (string, error) {
	dir := filepath.Join(cacheDir, "base-"+Suite+"-"+BaseKey())
	complete := func() bool {
		_, err := os.Stat(filepath.Join(dir, ".complete"))
		return err == nil
	}
	if complete() {
		return filepath.Join(dir, "rootfs"), nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", errors.New("building the lab's base image needs debootstrap: apt-get install debootstrap")
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".base.lock"), log)
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete() { // built by another lab while this one waited
		return filepath.Join(dir, "rootfs"), nil
	}
	tmp, err := os.MkdirTemp(cacheDir, "building-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	fmt.Fprintf(log, "latentlab: building the Debian %s base image with debootstrap (once; cached in %s)\n", Suite, cacheDir)
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(Packages, ","), Suite, rootfs)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("debootstrap %s: %w\n%s", Suite, err, tail(out, 2000))
	}
	if err := prepareBase(ctx, rootfs); err != nil {
		return "", fmt.Errorf("prepare base image: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(BaseKey()+"\n"), 0o644); err != nil {
		return "", err
	}
	// An incomplete base (a build cut off before .complete) is no one's
	// lower layer.
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "latentlab: base image ready\n")
	return filepath.Join(dir, "rootfs"), nil
}

// lockFile takes an exclusive flock on path, waiting while another process
// holds it (saying so once on log) until ctx ends. The lock goes with the
// process, also when it crashes.
func lockFile(ctx context.Context, path string, log io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for said := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !said {
			fmt.Fprintf(log, "latentlab: another lab is building the base image; waiting for it\n")
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// prepareBase makes a debootstrapped tree look like a Debian cloud AMI and
// fit for cloning: a passwordless-sudo default user, no identity of its own.
func prepareBase(ctx context.Context, root string) error {
	chroot := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("chroot %v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := chroot("useradd", "--create-home", "--shell", "/bin/bash", "--uid", "1000", "--user-group", DefaultUser); err != nil {
		return err
	}
	files := map[string]string{
		"etc/sudoers.d/90-cloud-init-users": DefaultUser + " ALL=(ALL) NOPASSWD:ALL\n",
		"etc/hostname":                      "localhost\n",
		"etc/hosts":                         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/machine-id":                    "",
		// Debian's sources: the lab reaches only the main archive.
		"etc/apt/sources.list": "deb http://deb.debian.org/debian " + Suite + " main\n",
	}
	for rel, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, "etc/sudoers.d/") {
			mode = 0o440
		}
		if err := os.WriteFile(filepath.Join(root, rel), []byte(content), mode); err != nil {
			return err
		}
	}
	// No identity shared by every clone.
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(root, "var/lib/dbus/machine-id"))
	// Timers that would race provisioning for the apt lock; masked as on
	// many cloud images.
	for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer"} {
		p := filepath.Join(root, "etc/systemd/system", unit)
		_ = os.Remove(p)
		if err := os.Symlink("/dev/null", p); err != nil {
			return err
		}
	}
	return chroot("apt-get", "clean")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
