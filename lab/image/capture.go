package image

import (
	"bytes"
	"context"
	"fmt"
	"github.com/latentworker/latentworker/lab/aptcache"
	"github.com/latentworker/latentworker/lab/pypicache"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Capture copies an instance's upper directory into a new layer directory
// (which must not exist), keeping whiteouts, opaque directories, owners,
// modes and extended attributes, then scrubs the per-instance identity the
// lab wrote at launch, as AWS leaves a captured volume without the instance's
// cloud-init state: SSH host keys, the listen address, hostname, the lab's
// hosts line, machine-id and the journal.
func Capture(ctx context.Context, upper, layer string) error {
	if err := os.MkdirAll(filepath.Dir(layer), 0o755); err != nil {
		return err
	}
	tmp := layer + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "cp", "-a", "--", upper+"/.", tmp+"/").CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("copy %s to %s: %w: %s", upper, tmp, err, out)
	}
	if err := Scrub(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return os.Rename(tmp, layer)
}

// Scrub removes per-instance identity from a layer directory.
func Scrub(layer string) error {
	removed, _ := scrubbed(layer)
	for _, rel := range removed {
		if err := removeRegular(filepath.Join(layer, rel)); err != nil {
			return err
		}
	}
	// machine-id stays an empty file: systemd makes a new one at first boot.
	if fi, err := os.Lstat(filepath.Join(layer, "etc/machine-id")); err == nil && fi.Mode().IsRegular() {
		if err := os.WriteFile(filepath.Join(layer, "etc/machine-id"), nil, 0o444); err != nil {
			return err
		}
	}
	return scrubHosts(filepath.Join(layer, "etc/hosts"))
}

// Scrubbed returns the paths, relative to the root, that Scrub may remove or
// change in layer.
func Scrubbed(layer string) []string {
	removed, changed := scrubbed(layer)
	return append(removed, changed...)
}

// scrubbed returns what Scrub removes from layer and what it rewrites.
func scrubbed(layer string) (removed, changed []string) {
	removed = []string{
		"etc/ssh/sshd_config.d/latentlab.conf",
		aptcache.AptConfPath,
		pypicache.PipConfPath,
		"etc/hostname",
		"var/lib/dbus/machine-id",
		"var/log/journal",
	}
	keys, _ := filepath.Glob(filepath.Join(layer, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		removed = append(removed, strings.TrimPrefix(k, layer+"/"))
	}
	return removed, []string{"etc/machine-id", "etc/hosts"}
}

// removeRegular removes a file or directory unless it is an overlay whiteout
// (a character device): a whiteout records a deletion the guest made and
// must survive.
func removeRegular(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil
	}
	if fi.Mode()&os.ModeCharDevice != 0 {
		return nil
	}
	return os.RemoveAll(p)
}

// scrubHosts drops the line the lab added to /etc/hosts.
func scrubHosts(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var keep []string
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.HasSuffix(strings.TrimRight(line, "\n"), "# latentlab") {
			continue
		}
		keep = append(keep, line)
	}
	out := []byte(strings.Join(keep, ""))
	if bytes.Equal(out, b) {
		return nil
	}
	return os.WriteFile(p, out, 0o644)
}
