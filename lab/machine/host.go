package machine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcessesRootedIn lists the host PIDs of the processes of containers booted
// from dir or below it, and of the systemd-nspawn processes that booted them.
// A container process is recognised by its root mount: an overlay whose upper
// directory is under dir (its /proc/PID/root reads "/" from the host, so the
// link says nothing). It finds them even when the systemd-nspawn that started
// them is gone.
func ProcessesRootedIn(dir string) ([]int, error) {
	dir = filepath.Clean(dir)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if rootUnder(pid, dir) || nspawnUnder(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// rootUnder reports whether pid's root is an overlay with its upper
// directory under dir.
func rootUnder(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// mount ID, parent, dev, root, mount point, ... " - " fstype source super-options
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		for _, opt := range strings.Split(after, ",") {
			if up, ok := strings.CutPrefix(opt, "upperdir="); ok {
				up = unescapeMount(up)
				if strings.HasPrefix(up, dir+"/") {
					return true
				}
			}
		}
	}
	return false
}

// nspawnUnder reports whether pid is a systemd-nspawn booting a directory
// under dir.
func nspawnUnder(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(b, []byte("systemd-nspawn")) {
		return false
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == "-D" && i+1 < len(args) && strings.HasPrefix(filepath.Clean(args[i+1]), dir+"/") {
			return true
		}
	}
	return false
}

// KillRootedIn sends SIGKILL to every process rooted in dir and waits briefly
// for them to go.
func KillRootedIn(dir string) {
	for i := 0; i < 50; i++ {
		pids, _ := ProcessesRootedIn(dir)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MountsUnder lists mount points at or below dir, deepest first, so they can
// be unmounted in that order.
func MountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		mp := unescapeMount(fields[1])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces etc.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Unmount unmounts path, retrying while busy and falling back to a lazy
// unmount so that nothing stays mounted.
func Unmount(path string) error {
	var err error
	for i := 0; i < 20; i++ {
		err = syscall.Unmount(path, 0)
		if err == nil || err == syscall.EINVAL || err == syscall.ENOENT {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lerr := syscall.Unmount(path, syscall.MNT_DETACH); lerr == nil {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// Reap removes every trace of machines under dir: it kills processes rooted
// there, unmounts what is mounted there and removes nspawn's propagation
// directories and the cgroups of the given machine names. It is what
// `latentlab down` runs after a crash.
func Reap(dir string, names []string) error {
	KillRootedIn(dir)
	var firstErr error
	mps, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := Unmount(mp); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, n := range names {
		removePropagate(n)
		if dirs, err := cgroupDirs(n); err == nil {
			if err := removeCgroups(dirs); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}
