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
		sh := &POSIXShell{User: user, Root: p.Root, TempDir: "/tmp"}
		switch p.Family {
		case platform.Linux:
			sh.BootIDCmd = "cat /proc/sys/kernel/random/boot_id"
			sh.RebootCmd = "systemctl reboot"
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
	User      string
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
