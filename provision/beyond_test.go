package provision

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/platform"
)

// TestParseFreeBSDConsole reads a FreeBSD 14 boot as its console shows it:
// sshd's key generation (ssh-keygen's own lines, outside any block), then
// ec2_loghostkey's "ec2: " block with a kernel line in the middle.
func TestParseFreeBSDConsole(t *testing.T) {
	h := checkConsoleKeys(t, platform.FreeBSDConsole, "freebsd-console.txt", "freebsd.pub")
	if algos := h.Algorithms(); len(algos) == 0 || algos[0] != ssh.KeyAlgoED25519 {
		t.Errorf("Algorithms() = %v; want ed25519 first", algos)
	}
}

// checkConsoleKeys parses a console of source and checks that it yields
// exactly the keys of a testdata authorized_keys file, typed, that those
// keys pass and another does not.
func checkConsoleKeys(t *testing.T, source platform.HostKeySource, console, pubFile string) HostKeys {
	t.Helper()
	pubs := readPubs(t, pubFile)
	h, err := ParseHostKeys(source, readConsole(t, console))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(sortedCopy(h.Fingerprints), " "), strings.Join(fingerprintsOf(pubs), " "); got != want {
		t.Errorf("fingerprints = %s; want %s", got, want)
	}
	if got, want := strings.Join(h.Types, " "), "ecdsa-sha2-nistp256 ssh-ed25519 ssh-rsa"; got != want {
		t.Errorf("types = %s; want %s", got, want)
	}
	for _, k := range pubs {
		if err := h.Check("10.0.1.23:22", nil, k); err != nil {
			t.Errorf("the instance's own %s key refused: %v", k.Type(), err)
		}
	}
	if err := h.Check("10.0.1.23:22", nil, newKey(t)); !errors.Is(err, ErrHostKeyMismatch) {
		t.Errorf("another key: %v; want a mismatch", err)
	}
	return h
}

func TestParseFreeBSDConsoleStrict(t *testing.T) {
	fp := "256 SHA256:u65E25Tm4F31gyatP+1px5/lFfSOm7uQ0RbQ3sUaAFw root@freebsd (ED25519)"
	for name, console := range map[string]string{
		"no block": "Starting sshd.\n" + fp + "\n",
		// A marker inside another writer's line opens nothing.
		"marker mid-line": "login: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: " + fp + "\n",
		"empty block":     "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: -----END SSH HOST KEY FINGERPRINTS-----\n",
		"md5 only":        "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: 2048 MD5:12:34:56 root@freebsd (RSA)\n",
		"bad base64":      "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: 256 SHA256:u65E25Tm4F31gyatP+1px5/lFfSOm7uQ0RbQ3sUaAF! root@freebsd (ED25519)\n",
	} {
		if _, err := ParseHostKeys(platform.FreeBSDConsole, []byte(console)); !errors.Is(err, ErrNoHostKeys) {
			t.Errorf("%s: error = %v; want ErrNoHostKeys", name, err)
		}
	}
	// Without the logger tag (an rc script that echoes), truncated: the
	// entries before the cut count.
	h, err := ParseHostKeys(platform.FreeBSDConsole, []byte("-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"+fp+"\r\n"))
	if err != nil || len(h.Fingerprints) != 1 || h.Types[0] != ssh.KeyAlgoED25519 {
		t.Errorf("untagged, truncated block = %+v, %v", h, err)
	}
}

// TestParseUserDataConsole reads an EC2Launch v2 console with the block
// latentworker's Windows user data writes on COM1 (CRLF, an EC2Launch
// line in the middle).
func TestParseUserDataConsole(t *testing.T) {
	checkConsoleKeys(t, platform.UserDataConsole, "windows-console.txt", "windows.pub")
	// cloud-init's blocks are not the user data's.
	if _, err := ParseHostKeys(platform.UserDataConsole, readConsole(t, "debian-console.txt")); !errors.Is(err, ErrNoHostKeys) {
		t.Errorf("a cloud-init console as user data: %v; want ErrNoHostKeys", err)
	}
	if _, err := ParseHostKeys(platform.NoConsole, readConsole(t, "windows-console.txt")); !errors.Is(err, ErrNoHostKeys) {
		t.Errorf("host key source none: %v; want ErrNoHostKeys", err)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestPowerShellCommands: what the Windows shell sends over SSH, with
// quoting that survives a hostile path, and never a secret in a command.
func TestPowerShellCommands(t *testing.T) {
	sh, err := ShellFor(platform.MustLookup("windows-2025"), "Administrator")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ got, want string }{
		{sh.ScriptPath("setup", "00ff"), "C:/Windows/Temp/latentworker-setup-00ff.ps1"},
		{sh.RunScript("C:/Windows/Temp/a'b.ps1"), "powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File 'C:/Windows/Temp/a''b.ps1'; exit $LASTEXITCODE"},
		{sh.Remove("C:/Windows/Temp/a'b.ps1"), "Remove-Item -Force -ErrorAction SilentlyContinue -LiteralPath 'C:/Windows/Temp/a''b.ps1'"},
		{sh.BootID(), "(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('yyyyMMddTHHmmss.fffffff')"},
		{sh.Reboot(), "Restart-Computer -Force"},
		{sh.OSName(), "(Get-CimInstance -ClassName Win32_OperatingSystem).Caption"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
	// The key travels on stdin, never in the command.
	if ak := sh.AuthorizeKey(); !strings.Contains(ak, "[Console]::In.ReadToEnd()") || !strings.Contains(ak, "administrators_authorized_keys") {
		t.Errorf("AuthorizeKey = %q; want it to read the key from stdin into administrators_authorized_keys", ak)
	}
	// A label scriptPath made is safe in the path.
	p, err := scriptPath(sh, "Extra Script's; rm")
	if err != nil || !strings.HasPrefix(p, "C:/Windows/Temp/latentworker-extra-script-s-rm-") || !strings.HasSuffix(p, ".ps1") {
		t.Errorf("scriptPath = %q, %v", p, err)
	}
}

// TestBSDShells: FreeBSD becomes root with su (no sudo on the base image),
// OpenBSD with doas -n, macOS with sudo -n; boot IDs and OS names come from
// sysctl, uname and sw_vers.
func TestBSDShells(t *testing.T) {
	for _, tc := range []struct {
		platform, user, run, reboot, osName string
	}{
		{"freebsd-14", "ec2-user", "su root -c 'sh '\\''/tmp/x.sh'\\'''", "su root -c 'shutdown -r now'", "uname -sr"},
		{"openbsd", "openbsd", "doas -n sh '/tmp/x.sh'", "doas -n shutdown -r now", "uname -sr"},
		{"macos", "ec2-user", "sudo -n sh '/tmp/x.sh'", "sudo -n shutdown -r now", `printf '%s %s\n' "$(sw_vers -productName)" "$(sw_vers -productVersion)"`},
	} {
		sh, err := ShellFor(platform.MustLookup(tc.platform), tc.user)
		if err != nil {
			t.Fatal(err)
		}
		if got := sh.RunScript("/tmp/x.sh"); got != tc.run {
			t.Errorf("%s RunScript = %q; want %q", tc.platform, got, tc.run)
		}
		if got := sh.Reboot(); got != tc.reboot {
			t.Errorf("%s Reboot = %q; want %q", tc.platform, got, tc.reboot)
		}
		if got := sh.OSName(); got != tc.osName {
			t.Errorf("%s OSName = %q; want %q", tc.platform, got, tc.osName)
		}
		if got := sh.BootID(); got != "sysctl -n kern.boottime | tr -d ' ,{}='" {
			t.Errorf("%s BootID = %q", tc.platform, got)
		}
	}
}
