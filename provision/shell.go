package provision

import (
	"fmt"
	"strings"

	"github.com/latentworker/latentworker/platform"
)

// Shell builds the commands a platform's login shell runs over the
// transport (Client): a script run as root, a file removed, the boot ID,
// a reboot. It knows the command language of a family, never a
// distribution, and its commands never hold a secret: a secret travels on
// the command's stdin.
type Shell interface {
	// ScriptPath is where a script called label (already reduced to
	// [a-z0-9-]) with the random suffix rand is uploaded.
	ScriptPath(label, rand string) string
	// RunScript runs the uploaded script at path as root, its stdin passed
	// on to the script.
	RunScript(path string) string
	// Remove removes the file at path; a missing file is no error.
	Remove(path string) string
	// BootID prints one word that changes on every boot.
	BootID() string
	// Reboot asks the machine to reboot; the connection may drop under it.
	Reboot() string
	// AuthorizeKey appends the public key line on its stdin to the login
	// user's authorized keys.
	AuthorizeKey() string
	// OSName prints the operating system's name (Linux: /etc/os-release,
	// whose PRETTY_NAME the caller picks; elsewhere one line).
	OSName() string
}

// ShellFor returns the shell of platform p for the login user.
func ShellFor(p *platform.Platform, user string) (Shell, error) {
	switch p.Shell {
	case platform.POSIX:
		sh := &POSIXShell{User: user, Root: p.Root, TempDir: "/tmp", JobRoot: "/var/tmp"}
		switch p.Family {
		case platform.Linux:
			sh.JobRoot = "/run" // root's, and empty after a boot
			sh.BootIDCmd = "cat /proc/sys/kernel/random/boot_id"
			// reboot is systemctl's under systemd; without it, it asks
			// init for runlevel 6 (sysvinit, OpenRC) or is BusyBox's.
			sh.RebootCmd = "reboot"
			sh.OSNameCmd = "cat /etc/os-release"
		default:
			// The BSDs and macOS: the boot time, in seconds and
			// microseconds, is the boot's identity.
			sh.BootIDCmd = "sysctl -n kern.boottime | tr -d ' ,{}='"
			sh.RebootCmd = "shutdown -r now"
			sh.OSNameCmd = "uname -sr"
			if p.Family == platform.MacOS {
				sh.OSNameCmd = `printf '%s %s\n' "$(sw_vers -productName)" "$(sw_vers -productVersion)"`
			}
		}
		return sh, nil
	case platform.PowerShell:
		return PowerShellShell{}, nil
	}
	return nil, fmt.Errorf("platform %s: no shell %q", p.Name, p.Shell)
}

// POSIXShell builds commands for a POSIX sh login shell, becoming root the
// platform's way unless the login user is root.
type POSIXShell struct {
	User string
	// JobRoot holds the directories of detached jobs (Detacher); "" is
	// /var/tmp.
	JobRoot   string
	Root      platform.Root
	TempDir   string
	BootIDCmd string
	RebootCmd string
	OSNameCmd string
}

// AsRoot returns cmd run as root. sudo and doas get -n, so that they fail
// instead of prompting and never read (and consume) a secret meant for
// cmd's stdin.
func (s *POSIXShell) AsRoot(cmd string) string {
	if s.User == "root" {
		return cmd
	}
	switch s.Root {
	case platform.Sudo:
		return "sudo -n " + cmd
	case platform.Doas:
		return "doas -n " + cmd
	case platform.SuRoot:
		return "su root -c " + shellQuote(cmd)
	}
	return cmd
}

func (s *POSIXShell) ScriptPath(label, rand string) string {
	return s.TempDir + "/latentworker-" + label + "-" + rand + ".sh"
}

func (s *POSIXShell) RunScript(path string) string { return s.AsRoot("sh " + shellQuote(path)) }
func (s *POSIXShell) Remove(path string) string    { return "rm -f -- " + shellQuote(path) }
func (s *POSIXShell) BootID() string               { return s.BootIDCmd }
func (s *POSIXShell) Reboot() string               { return s.AsRoot(s.RebootCmd) }
func (s *POSIXShell) OSName() string               { return s.OSNameCmd }

func (s *POSIXShell) AuthorizeKey() string {
	return "umask 077 && mkdir -p ~/.ssh && cat >> ~/.ssh/authorized_keys"
}

// PowerShellShell builds commands for Windows' OpenSSH server whose
// default shell is PowerShell, logged in as the Administrator (already
// elevated).
type PowerShellShell struct{}

// psQuote quotes s as one single-quoted PowerShell string.
func psQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func (PowerShellShell) ScriptPath(label, rand string) string {
	return `C:/Windows/Temp/latentworker-` + label + "-" + rand + ".ps1"
}

// RunScript runs the script in a child powershell.exe, which inherits the
// session's stdin, and passes its exit status on: the session's own
// PowerShell (OpenSSH's DefaultShell, given the command with -c) would
// report any failing program as 1, and RebootRequired answers with 10.
func (PowerShellShell) RunScript(path string) string {
	return "powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File " + psQuote(path) + "; exit $LASTEXITCODE"
}

func (PowerShellShell) Remove(path string) string {
	return "Remove-Item -Force -ErrorAction SilentlyContinue -LiteralPath " + psQuote(path)
}

func (PowerShellShell) BootID() string {
	return "(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('yyyyMMddTHHmmss.fffffff')"
}

func (PowerShellShell) Reboot() string { return "Restart-Computer -Force" }

func (PowerShellShell) AuthorizeKey() string {
	return `$k = [Console]::In.ReadToEnd(); Add-Content -Encoding ascii -LiteralPath "$env:ProgramData\ssh\administrators_authorized_keys" -Value $k.Trim()`
}

func (PowerShellShell) OSName() string {
	return "(Get-CimInstance -ClassName Win32_OperatingSystem).Caption"
}

// Detacher is a Shell that can run a script as a job that outlives the SSH
// session: the job's stdout and stderr go to files on the machine, which
// the caller follows, and follows again from where it was after a
// reconnection; its exit status is kept in a file. Everything in the job's
// directory is root's alone.
type Detacher interface {
	// JobDir is the directory of a job called label with the random
	// suffix rand.
	JobDir(label, rand string) string
	// StartJob runs the script at path as root, detached, in a new job
	// directory dir, then follows it as FollowJob does from the start:
	// one command. Its stdin (a secret, or nothing) is stored in a file of
	// dir, opened as the job's stdin and unlinked before the job starts.
	StartJob(path, dir string) string
	// JobStarted exits 0 when dir exists (the job was started).
	JobStarted(dir string) string
	// FollowJob copies the job's stdout and stderr, from byte offsets
	// outOff and errOff, to its own stdout and stderr until the job ends.
	FollowJob(dir string, outOff, errOff int64) string
	// JobStatus prints the job's exit status.
	JobStatus(dir string) string
	// FinishJob prints the job's exit status, then removes dir and the
	// script at path: the normal end of a job, in one command.
	FinishJob(dir, path string) string
	// KillJob ends the job and its children.
	KillJob(dir string) string
	// RemoveJob removes dir.
	RemoveJob(dir string) string
}

// jobStarter is StartJob's script ($1 the script, $2 the job directory).
// The stdin file is opened on fd 3 and unlinked before the job starts, so
// the secret lives only in an open, nameless file until the script reads
// it. setsid, where there is one, makes the job a process group KillJob
// can end whole; nohup keeps it alive when the SSH session goes.
const jobStarter = `set -eu
umask 077
mkdir -- "$2"
cat >"$2/in"
exec 3<"$2/in"
rm -f -- "$2/in"
cd /
: >"$2/out"
: >"$2/err"
# The job gets the umask a command run through sudo gets, not the
# starter's own.
umask 022
job='sh "$1" <&3 3<&- >"$2/out" 2>"$2/err"; echo "$?" >"$2/rc.tmp"; mv -f "$2/rc.tmp" "$2/rc"'
if command -v setsid >/dev/null 2>&1; then
	nohup setsid sh -c "$job" latentworker-job "$1" "$2" </dev/null >/dev/null 2>&1 &
else
	nohup sh -c "$job" latentworker-job "$1" "$2" </dev/null >/dev/null 2>&1 &
fi
echo "$!" >"$2/pid"
`

// followLoop copies the job's stdout and stderr from byte offsets $o and
// $e until the job has ended.
//
// Where tail knows --pid (GNU coreutils: every Linux), two tails follow the
// files as they grow and end when the job's process has ended, which they
// check every 50 ms without starting a process: nothing runs meanwhile. A
// job whose process ended without writing its status was killed (exit 3).
//
// Elsewhere (the BSDs, macOS), or when the job's process is gone already,
// a loop checks for the end ($d/rc exists) every 50 ms (a sleep is the only
// process it starts meanwhile) and copies the output every 250 ms and at
// the end.
const followLoop = `if p=$(cat "$d/pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null &&
	tail --pid="$p" -c 0 /dev/null >/dev/null 2>&1; then
	tail -s 0.05 --pid="$p" -c "+$((o + 1))" -f "$d/out" &
	t=$!
	tail -s 0.05 --pid="$p" -c "+$((e + 1))" -f "$d/err" >&2
	wait "$t"
	[ -e "$d/rc" ] && exit 0
	echo "latentworker: the job ended without an exit status (killed?)" >&2
	exit 3
fi
size() { if [ -e "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }
i=0
while :; do
	fin=no
	[ -e "$d/rc" ] && fin=yes
	if [ "$fin" = yes ] || [ "$i" -eq 0 ]; then
		n=$(size "$d/out")
		if [ "$n" -gt "$o" ]; then tail -c "+$((o + 1))" "$d/out" | head -c "$((n - o))"; o=$n; fi
		n=$(size "$d/err")
		if [ "$n" -gt "$e" ]; then tail -c "+$((e + 1))" "$d/err" | head -c "$((n - e))" >&2; e=$n; fi
	fi
	[ "$fin" = yes ] && exit 0
	[ -d "$d" ] || { echo "latentworker: job directory $d is gone" >&2; exit 3; }
	i=$(((i + 1) % 5))
	sleep 0.05
done`

// jobFollower is FollowJob's script ($1 the directory, $2 and $3 the
// offsets already seen of stdout and stderr).
const jobFollower = `d=$1 o=$2 e=$3
` + followLoop

// jobStartFollow is StartJob's script: jobStarter, then followLoop from
// the start.
const jobStartFollow = jobStarter + `set +eu
d=$2 o=0 e=0
` + followLoop

func (s *POSIXShell) JobDir(label, rand string) string {
	root := s.JobRoot
	if root == "" {
		root = "/var/tmp"
	}
	return root + "/latentworker-job-" + label + "-" + rand
}

func (s *POSIXShell) StartJob(path, dir string) string {
	return s.AsRoot("sh -c " + shellQuote(jobStartFollow) + " latentworker-start " + shellQuote(path) + " " + shellQuote(dir))
}

func (s *POSIXShell) JobStarted(dir string) string {
	return s.AsRoot("test -d " + shellQuote(dir))
}

func (s *POSIXShell) FollowJob(dir string, outOff, errOff int64) string {
	return s.AsRoot(fmt.Sprintf("sh -c %s latentworker-follow %s %d %d", shellQuote(jobFollower), shellQuote(dir), outOff, errOff))
}

func (s *POSIXShell) JobStatus(dir string) string {
	return s.AsRoot("cat " + shellQuote(dir+"/rc"))
}

func (s *POSIXShell) FinishJob(dir, path string) string {
	return s.AsRoot("sh -c " + shellQuote(`cat "$1/rc" && rm -rf -- "$1" "$2"`) + " latentworker-finish " + shellQuote(dir) + " " + shellQuote(path))
}

func (s *POSIXShell) KillJob(dir string) string {
	q := shellQuote(dir + "/pid")
	return s.AsRoot("sh -c " + shellQuote(`p=$(cat "$1") || exit 0; kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true`) + " latentworker-kill " + q)
}

func (s *POSIXShell) RemoveJob(dir string) string {
	return s.AsRoot("rm -rf -- " + shellQuote(dir))
}
