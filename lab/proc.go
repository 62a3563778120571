package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStart returns a process's start time in clock ticks since boot (field
// 22 of /proc/PID/stat), which tells a recorded PID from a reused one.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// alive reports whether pid is still the process recorded with start.
func alive(pid int, start uint64) bool {
	return pid > 0 && start != 0 && procStart(pid) == start
}

// killRecorded ends a recorded process and its process group: SIGTERM, then
// SIGKILL after a grace period.
func killRecorded(pid int, start uint64) {
	if !alive(pid, start) {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && alive(pid, start); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid, start) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
