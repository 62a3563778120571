package machine

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Each machine boots in cgroups of its own. systemd-nspawn with --keep-unit
// and without a host systemd builds the container's cgroup tree ("payload")
// under the cgroup it runs in: left in the lab's cgroup, every container
// would share one tree, so units of the same name in two guests (ssh.service,
// buildbot-worker@NAME.service) would share a cgroup, and a guest shutting
// down would kill the other guests' sshd and workers along with its own.
//
// The hierarchies that matter are the ones systemd tracks units in: the
// named v1 hierarchy "name=systemd" and the unified (v2) one.

// cgroupPrefix starts the name of a machine's cgroup.
const cgroupPrefix = "latentlab-"

// cgroupDirs returns the directories of the cgroups machine name boots in,
// one per hierarchy systemd uses that this host has: children of this
// process's own cgroups. Neither is created here.
func cgroupDirs(name string) ([]string, error) {
	mounts, err := systemdCgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		// hierarchy-ID:controllers:path
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		key := f[1]
		if f[0] == "0" && f[1] == "" {
			key = "unified"
		}
		if m, ok := mounts[key]; ok {
			dirs = append(dirs, filepath.Join(m, f[2], cgroupPrefix+name))
		}
	}
	return dirs, nil
}

// systemdCgroupMounts finds the mount points of the name=systemd (key
// "name=systemd") and unified (key "unified") hierarchies.
func systemdCgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		before, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pre, post := strings.Fields(before), strings.Fields(after)
		if len(pre) < 5 || len(post) < 3 {
			continue
		}
		switch {
		case post[0] == "cgroup2":
			mounts["unified"] = pre[4]
		case post[0] == "cgroup" && slices.Contains(strings.Split(post[2], ","), "name=systemd"):
			mounts["name=systemd"] = pre[4]
		}
	}
	return mounts, sc.Err()
}

// CgroupsLeft lists the cgroups of machine name that exist: none once the
// machine has stopped or was reaped.
func CgroupsLeft(name string) ([]string, error) {
	dirs, err := cgroupDirs(name)
	if err != nil {
		return nil, err
	}
	var left []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
	}
	return left, nil
}

// makeCgroups creates the machine's cgroups and returns the cgroup.procs
// files a process writes its PID to in order to move there.
func makeCgroups(dirs []string) ([]string, error) {
	var procs []string
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", d, err)
		}
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	return procs, nil
}

// removeCgroups removes the machine's cgroups and what the guest made in
// them, deepest first. Processes of a guest that was killed may take a
// moment to leave them (rmdir says EBUSY): it tries again for a few
// seconds, then names what stays in the error.
func removeCgroups(dirs []string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := removeCgroupsOnce(dirs)
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func removeCgroupsOnce(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		var tree []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				tree = append(tree, p)
			}
			return nil
		})
		for i := len(tree) - 1; i >= 0; i-- {
			if err := os.Remove(tree[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", tree[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
