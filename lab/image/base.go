// Package image owns the lab's root filesystems: a base image per release
// (Debian, Ubuntu; the recipes), built with debootstrap on first use and
// cached, and the layers CreateImage captures from
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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/latentworker/latentworker/lab/flock"
)

// prepVersion changes whenever prepareBase changes, so caches are rebuilt.
const prepVersion = "6"

// BaseKey identifies a base image build: everything in the recipe that goes
// into the root filesystem, and the preparation's version.
func BaseKey(r Recipe) string {
	parts := []string{r.Name, string(r.Family), r.Suite, r.Mirror, r.Security,
		strings.Join(r.Components, ","), r.Keyring, strings.Join(r.AllPackages(), ","),
		fmt.Sprint(r.Deb822), r.User, prepVersion}
	if r.Init != "" {
		parts = append(parts, "init "+string(r.Init), strings.Join(r.AfterPackages(), ","))
	}
	h := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(h[:6])
}

// baseDir is where the base of r is cached under cacheDir.
func baseDir(cacheDir string, r Recipe) string {
	return filepath.Join(cacheDir, "base-"+r.Name+"-"+BaseKey(r))
}

// Built returns the cached base rootfs of the release name under cacheDir,
// if it has been built.
func Built(cacheDir, name string) (string, bool) {
	r, err := Lookup(name)
	if err != nil {
		return "", false
	}
	dir := baseDir(cacheDir, r)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return "", false
	}
	return filepath.Join(dir, "rootfs"), true
}

// EnsureBase returns the directory of the cached base rootfs of the release
// name under cacheDir, building it with debootstrap first when it is not
// there (two to four minutes; later calls return at once). log receives
// progress lines.
//
// Labs started at once (tests run side by side) share the cache: one builds
// a release while the others wait on its lock, and a complete base is never
// replaced, since running instances have it as their overlay's lowest layer.
func EnsureBase(ctx context.Context, cacheDir, name string, log io.Writer) (string, error) {
	r, err := Lookup(name)
	if err != nil {
		return "", err
	}
	if rootfs, ok := Built(cacheDir, name); ok {
		return rootfs, nil
	}
	if err := CanBuild(name); err != nil {
		return "", err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	unlock, err := flock.Lock(ctx, filepath.Join(cacheDir, ".base-"+r.Name+".lock"), func() {
		fmt.Fprintf(log, "latentlab: another lab is building the base image; waiting for it\n")
	})
	if err != nil {
		return "", err
	}
	defer unlock()
	if rootfs, ok := Built(cacheDir, name); ok { // built by another lab while this one waited
		return rootfs, nil
	}
	// A build of this release left by a process that died (the lock is
	// ours, so no one else is building it).
	stale, _ := filepath.Glob(filepath.Join(cacheDir, "building-"+r.Name+"-*"))
	for _, d := range stale {
		removeBuild(d)
	}
	tmp, err := os.MkdirTemp(cacheDir, "building-"+r.Name+"-")
	if err != nil {
		return "", err
	}
	defer removeBuild(tmp)
	rootfs := filepath.Join(tmp, "rootfs")
	start := time.Now()
	fmt.Fprintf(log, "latentlab: building the %s (%s) base image with debootstrap (once; cached in %s)\n", r.Name, r.Suite, cacheDir)
	args := []string{"--variant=minbase", "--components=" + strings.Join(r.Components, ","),
		"--include=" + strings.Join(r.AllPackages(), ",")}
	if r.Keyring != "" {
		args = append(args, "--keyring="+r.Keyring)
	}
	args = append(args, r.Suite, rootfs, r.Mirror)
	if out, err := runGroup(ctx, "debootstrap", args...); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("building the %s base image: cut off: %w", r.Name, ctx.Err())
		}
		return "", fmt.Errorf("debootstrap %s: %w\n%s", r.Suite, err, tail(out, 2000))
	}
	strapped := time.Since(start)
	if err := prepareBase(ctx, rootfs, r); err != nil {
		return "", fmt.Errorf("prepare the %s base image: %w", r.Name, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(BaseKey(r)+"\n"), 0o644); err != nil {
		return "", err
	}
	// An incomplete base (a build cut off before .complete) is no one's
	// lower layer.
	dir := baseDir(cacheDir, r)
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "latentlab: %s base image ready (debootstrap %.0fs, in all %.0fs)\n", r.Name, strapped.Seconds(), time.Since(start).Seconds())
	return filepath.Join(dir, "rootfs"), nil
}

// CanBuild says why this host cannot build the base image of the release
// name, or nil if it can: debootstrap, its script for the suite, the
// archive's keyring.
func CanBuild(name string) error {
	r, err := Lookup(name)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("building the lab's base images needs debootstrap: bash .ci/install-deps")
	}
	if _, err := os.Stat(filepath.Join(debootstrapScripts, r.Suite)); err != nil {
		return fmt.Errorf("this debootstrap cannot build %s (%s): it has no %s script; on Debian 12, bash .ci/install-deps installs bookworm-backports' debootstrap", r.Name, r.Suite, r.Suite)
	}
	if r.Keyring != "" {
		if _, err := os.Stat(r.Keyring); err != nil {
			return fmt.Errorf("building %s needs the keyring %s: bash .ci/install-deps installs it", r.Name, r.Keyring)
		}
	}
	return nil
}

// debootstrapScripts holds debootstrap's per-suite scripts.
const debootstrapScripts = "/usr/share/debootstrap/scripts"

// runGroup runs a command in its own process group and, when ctx ends,
// kills the whole group: debootstrap is a shell script whose children
// (dpkg in the chroot) would outlive it.
func runGroup(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

// removeBuild removes an unfinished build directory, unmounting first what
// a cut-off debootstrap left mounted in it (proc, sys), deepest first.
func removeBuild(dir string) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	b, _ := os.ReadFile("/proc/self/mounts")
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			mp := strings.ReplaceAll(f[1], "\\040", " ")
			if strings.HasPrefix(mp, dir+"/") {
				mps = append(mps, mp)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	_ = os.RemoveAll(dir)
}

// prepareBase makes a debootstrapped tree look like the release's cloud
// AMI and fit for cloning: a passwordless-sudo default user, the release's
// apt sources, no identity of its own.
func prepareBase(ctx context.Context, root string, r Recipe) error {
	chroot := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("chroot %v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := chroot("useradd", "--create-home", "--shell", "/bin/bash", "--uid", "1000", "--user-group", r.User); err != nil {
		return err
	}
	files := map[string]string{
		"etc/sudoers.d/90-cloud-init-users": r.User + " ALL=(ALL) NOPASSWD:ALL\n",
		"etc/hostname":                      "localhost\n",
		"etc/hosts":                         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/machine-id":                    "",
	}
	sources, content := aptSources(root, r)
	files[sources] = content
	if sources != "etc/apt/sources.list" {
		files["etc/apt/sources.list"] = "# " + string(r.Family) + " sources are in /" + sources + "\n"
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
	// The release's updates, as in a freshly published AMI (and what
	// replaces a package debootstrap chose).
	if err := upgrade(ctx, root, r.AfterPackages()); err != nil {
		return err
	}
	switch {
	case r.Init != "":
		// No systemd, no timers to mask: apt's cron.daily job does
		// nothing while APT::Periodic is not configured (it is not).
	case r.Family == Debian:
		// Timers that would race provisioning for the apt lock; masked
		// as on many cloud images.
		for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer"} {
			p := filepath.Join(root, "etc/systemd/system", unit)
			_ = os.Remove(p)
			if err := os.Symlink("/dev/null", p); err != nil {
				return err
			}
		}
	case r.Family == Ubuntu:
		if err := firstBootApt(root); err != nil {
			return err
		}
	}
	if err := chroot("apt-get", "clean"); err != nil {
		return err
	}
	// No package lists, as in a published cloud image: a client must run
	// apt-get update before it installs anything, as on AWS.
	lists, _ := filepath.Glob(filepath.Join(root, "var/lib/apt/lists/*"))
	for _, l := range lists {
		if filepath.Base(l) == "partial" || filepath.Base(l) == "lock" {
			continue
		}
		if err := os.RemoveAll(l); err != nil {
			return err
		}
	}
	return nil
}

// aptSources renders the release's apt sources as its cloud images have
// them: the release, its updates and its security archive, in the
// one-line or the deb822 format. It returns the path relative to root.
func aptSources(root string, r Recipe) (rel, content string) {
	comps := strings.Join(r.Components, " ")
	if !r.Deb822 {
		return "etc/apt/sources.list", fmt.Sprintf("deb %s %s %s\ndeb %s %s-updates %s\ndeb %s %s-security %s\n",
			r.Mirror, r.Suite, comps, r.Mirror, r.Suite, comps, r.Security, r.Suite, comps)
	}
	keyring := ""
	for _, k := range []string{"usr/share/keyrings/" + string(r.Family) + "-archive-keyring.pgp", "usr/share/keyrings/" + string(r.Family) + "-archive-keyring.gpg"} {
		if _, err := os.Stat(filepath.Join(root, k)); err == nil {
			keyring = "Signed-By: /" + k + "\n"
			break
		}
	}
	stanza := func(uri, suites string) string {
		return "Types: deb\nURIs: " + uri + "\nSuites: " + suites + "\nComponents: " + comps + "\n" + keyring
	}
	return "etc/apt/sources.list.d/" + string(r.Family) + ".sources",
		stanza(r.Mirror, r.Suite+" "+r.Suite+"-updates") + "\n" + stanza(r.Security, r.Suite+"-security")
}

// upgrade installs the release's pending updates in the tree, then the
// packages after (if any), with /proc mounted for maintainer scripts and no
// service started.
func upgrade(ctx context.Context, root string, after []string) (err error) {
	policy := filepath.Join(root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	defer os.Remove(policy)
	proc := filepath.Join(root, "proc")
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		return fmt.Errorf("mount proc in %s: %w", root, err)
	}
	defer func() {
		if uerr := syscall.Unmount(proc, syscall.MNT_DETACH); uerr != nil && err == nil {
			err = fmt.Errorf("unmount %s: %w", proc, uerr)
		}
	}()
	steps := [][]string{
		{"apt-get", "-q", "update"},
		{"apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold", "dist-upgrade"},
	}
	if len(after) > 0 {
		steps = append(steps, append([]string{"apt-get", "-q", "-y", "--no-install-recommends", "install"}, after...))
	}
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("chroot %v: %w: %s", args, err, tail(out, 2000))
		}
	}
	return nil
}

// updateStamp is what Ubuntu's apt touches after a successful update.
const updateStamp = "var/lib/apt/periodic/update-success-stamp"

// firstBootUnit starts apt's daily jobs at an instance's first boot.
const firstBootUnit = "latentlab-apt-first-boot.service"

// firstBootApt makes apt run at an instance's first boot, as on AWS's
// Ubuntu AMIs, whose daily apt runs are overdue when an instance boots:
// apt-daily (apt update), then apt-daily-upgrade (unattended-upgrades)
// take the apt and dpkg locks in the first minute, so provisioning must
// wait for them. A unit starts them at boot while apt has never updated
// its lists on the system (Ubuntu's apt touches update-success-stamp
// after every successful update), so it runs once per instance and not
// in images baked from one. The timers stay as the release has them for
// later days. (systemd does not catch up the timers here by itself: an
// empty machine-id is not a first boot for it, and overdue stamps did
// not make systemd 255 start them at boot.)
func firstBootApt(root string) error {
	_ = os.Remove(filepath.Join(root, updateStamp))
	unit := `[Unit]
Description=apt's daily jobs, overdue at an instance's first boot as in a cloud image (latentlab)
ConditionPathExists=!/` + updateStamp + `
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/systemctl start --no-block apt-daily.service apt-daily-upgrade.service

[Install]
WantedBy=multi-user.target
`
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", firstBootUnit), []byte(unit), 0o644); err != nil {
		return err
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	return os.Symlink("/etc/systemd/system/"+firstBootUnit, filepath.Join(wants, firstBootUnit))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
