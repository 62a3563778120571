package platform

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestRegistry checks what every entry must hold, whatever its family.
func TestRegistry(t *testing.T) {
	seen := map[string]string{}
	for _, p := range All() {
		for _, n := range append([]string{p.Name}, p.Aliases...) {
			if other, dup := seen[n]; dup {
				t.Errorf("name %q is both %s's and %s's", n, other, p.Name)
			}
			seen[n] = p.Name
		}
		switch {
		case p.Title == "" || p.Family == "" || p.Shell == "":
			t.Errorf("%s: title, family and shell are required: %+v", p.Name, p)
		case p.SSHPort < 1 || p.SSHPort > 65535:
			t.Errorf("%s: SSH port %d", p.Name, p.SSHPort)
		case p.KeyType != Ed25519 && p.KeyType != RSA:
			t.Errorf("%s: key type %q", p.Name, p.KeyType)
		case p.Install != Package && p.Install != Pip && p.Install != NixOSModule:
			t.Errorf("%s: install %q", p.Name, p.Install)
		case p.Install == Package && p.Package == "":
			t.Errorf("%s: installs a package but names none", p.Name)
		case p.WorkerUser == "" || p.WorkersDir == "" || p.ServiceName == "" || p.Service == "":
			t.Errorf("%s: worker user, directory and service are required", p.Name)
		case p.ImageWait <= 0:
			t.Errorf("%s: no image wait", p.Name)
		case p.RebootCheck == "" || len(p.Verify) == 0:
			t.Errorf("%s: reboot check and verification are required", p.Name)
		case p.ProvedBy != ProvedByLab && p.ProvedBy != ProvedByStatic:
			t.Errorf("%s: proved by %q", p.Name, p.ProvedBy)
		case p.Proof == "" || strings.Count(p.Proof, ". ") > 0:
			t.Errorf("%s: proof must be one sentence: %q", p.Name, p.Proof)
		case p.ProvedBy == ProvedByLab && !p.OfficialBase():
			t.Errorf("%s: a lab platform is found by its AWS owner and name", p.Name)
		case p.Shell == PowerShell && p.KeyType != RSA:
			t.Errorf("%s: EC2 imports only RSA keys for Windows", p.Name)
		case p.Family == Linux && p.PackageManager == "":
			t.Errorf("%s: a Linux platform names its package manager", p.Name)
		}
		switch {
		case p.Shell == PowerShell && (p.Root != Elevated || p.HostKeys != UserDataConsole):
			t.Errorf("%s: PowerShell logs in elevated and pins the host keys its user data prints", p.Name)
		case p.Family == Windows && (p.Python == nil || !sha256Hex.MatchString(p.Python.SHA256) ||
			!strings.HasPrefix(p.Python.URL, "https://www.python.org/ftp/python/"+p.Python.Version+"/")):
			t.Errorf("%s: Windows pins a python.org installer by version and SHA-256: %+v", p.Name, p.Python)
		case p.Family != Windows && p.Python != nil:
			t.Errorf("%s: only Windows installs python.org's Python", p.Name)
		case p.Shell == POSIX && p.Family != Linux && p.PackageManager == "":
			t.Errorf("%s: a POSIX platform names its package manager fragment", p.Name)
		case !p.OfficialBase() && p.ProvedBy != ProvedByStatic:
			t.Errorf("%s: a platform without an official image cannot be baked in the lab", p.Name)
		case p.ProvedBy == ProvedByStatic && !strings.Contains(p.Proof, "on AWS"):
			t.Errorf("%s: a static proof says what a first bake on AWS must confirm: %q", p.Name, p.Proof)
		case p.OfficialBase() != (p.SSHUser != ""):
			t.Errorf("%s: a platform with an official image names its login user, one without leaves it to the user", p.Name)
		}
		if p.Service == Systemd && p.Install != NixOSModule && !strings.Contains(p.ServiceName, "%s") {
			t.Errorf("%s: systemd unit %q is not a template", p.Name, p.ServiceName)
		}
	}
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestBeyondLinux pins the entries no lab can bake: their AWS filters,
// users and the ways they become root and pin host keys.
func TestBeyondLinux(t *testing.T) {
	for _, tc := range []struct {
		name, owner, pattern, user string
		fam                        Family
		root                       Root
		keys                       HostKeySource
		key                        KeyType
		service                    Service
		host                       bool
	}{
		{"windows-2022", "amazon", "Windows_Server-2022-English-Full-Base-*", "Administrator", Windows, Elevated, UserDataConsole, RSA, ScheduledTask, false},
		{"windows-2025", "amazon", "Windows_Server-2025-English-Full-Base-*", "Administrator", Windows, Elevated, UserDataConsole, RSA, ScheduledTask, false},
		{"freebsd-14", "782442783595", "FreeBSD 14.*-RELEASE-amd64* base UFS", "ec2-user", FreeBSD, SuRoot, FreeBSDConsole, Ed25519, RCd, false},
		{"openbsd", "", "", "", OpenBSD, Doas, NoConsole, Ed25519, RCd, false},
		{"macos", "amazon", "amzn-ec2-macos-*", "ec2-user", MacOS, Sudo, NoConsole, Ed25519, Launchd, true},
	} {
		p, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		got := []any{p.BaseOwner, p.BaseName, p.SSHUser, p.Family, p.Root, p.HostKeys, p.KeyType, p.Service, p.NeedsHost, p.ProvedBy}
		want := []any{tc.owner, tc.pattern, tc.user, tc.fam, tc.root, tc.keys, tc.key, tc.service, tc.host, ProvedByStatic}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v; want %v", tc.name, got, want)
		}
	}
	if got := MustLookup("macos").Group(); got != "staff" {
		t.Errorf("macOS worker group = %q; want staff", got)
	}
	if got := MustLookup("freebsd").Group(); got != "buildbot" {
		t.Errorf("FreeBSD worker group = %q; want buildbot", got)
	}
	if got := MustLookup("windows-2022").WorkerDir("w1"); got != `C:\buildbot\w1` {
		t.Errorf("Windows worker dir = %q", got)
	}
}

func TestLookup(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"debian", "debian-12"}, {"debian-12", "debian-12"}, {"debian-13", "debian-13"},
		{"ubuntu", "ubuntu-24.04"}, {"ubuntu-24.04", "ubuntu-24.04"},
	} {
		p, err := Lookup(tc.name)
		if err != nil || p.Name != tc.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tc.name, p, err, tc.want)
		}
	}
	for _, bad := range []string{"", "nosuch", "Debian", "debian-12 ", "debian-1"} {
		_, err := Lookup(bad)
		if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "debian-12, debian, ") {
			t.Errorf("Lookup(%q) error = %v; want ErrUnknown listing the known platforms", bad, err)
		}
	}
	if !slices.Contains(Names(), Default) {
		t.Errorf("Default %q is not in the registry", Default)
	}
}

func TestUnitAndDir(t *testing.T) {
	p := MustLookup("debian-12")
	if got, want := p.Unit("w1"), "buildbot-worker@w1.service"; got != want {
		t.Errorf("Unit(w1) = %q; want %q", got, want)
	}
	if got, want := p.WorkerDir("w1"), "/var/lib/buildbot/workers/w1"; got != want {
		t.Errorf("WorkerDir(w1) = %q; want %q", got, want)
	}
	win := &Platform{Shell: PowerShell, WorkersDir: `C:\buildbot\`}
	if got, want := win.WorkerDir("w1"), `C:\buildbot\w1`; got != want {
		t.Errorf("Windows WorkerDir(w1) = %q; want %q", got, want)
	}
}

// TestNoSystemd pins the guide's other Linux systems (issue 19): their AWS
// filters (or none), users, install methods and services.
func TestNoSystemd(t *testing.T) {
	for _, tc := range []struct {
		name, owner, pattern, user, pm string
		root                           Root
		key                            KeyType
		install                        Install
		service                        Service
		unit                           string
		proof                          Proof
	}{
		{"debian-12-sysvinit", "self", "debian-12-sysvinit-amd64-*", "admin", "apt", Sudo, Ed25519, Pip, SysVInit, "buildbot-worker", ProvedByLab},
		{"debian-12-openrc", "self", "debian-12-openrc-amd64-*", "admin", "apt", Sudo, Ed25519, Pip, OpenRC, "buildbot-worker.w1", ProvedByLab},
		{"alpine", "538276064493", "alpine-3.*-x86_64-bios-cloudinit-r*", "alpine", "apk", Doas, Ed25519, Pip, OpenRC, "buildbot-worker.w1", ProvedByStatic},
		{"arch", "", "", "", "pacman", Sudo, RSA, Pip, Systemd, "buildbot-worker@w1.service", ProvedByStatic},
		{"nixos", "427812963091", "nixos/2?.?[15].*-x86_64-linux", "root", "nix", Elevated, Ed25519, NixOSModule, Systemd, "buildbot-worker.service", ProvedByStatic},
	} {
		p := MustLookup(tc.name)
		got := []any{p.BaseOwner, p.BaseName, p.SSHUser, p.PackageManager, p.Root, p.KeyType, p.Install, p.Service, p.Unit("w1"), p.ProvedBy, p.Family}
		want := []any{tc.owner, tc.pattern, tc.user, tc.pm, tc.root, tc.key, tc.install, tc.service, tc.unit, tc.proof, Linux}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v; want %v", tc.name, got, want)
		}
		if p.WithPip() != p && p.Install == Pip {
			t.Errorf("%s: WithPip changes a platform that installs with pip already", tc.name)
		}
	}
	for _, name := range []string{"debian-12-sysvinit", "debian-12-openrc", "alpine", "arch"} {
		if p := MustLookup(name); p.WorkerUser != PipWorkerUser || p.WorkersDir != PipWorkersDir {
			t.Errorf("%s: pip's user and directory are the guide's: %s %s", name, p.WorkerUser, p.WorkersDir)
		}
	}
	for _, name := range []string{"nixos/25.05.806195.0f5b4f1c6a91-x86_64-linux", "nixos/24.11.719113.50ab793786d9-x86_64-linux"} {
		if ok, _ := path.Match(MustLookup("nixos").BaseName, name); !ok {
			t.Errorf("nixos pattern does not find %s", name)
		}
	}
	for _, name := range []string{"nixos/25.11pre801234.abcdef012345-x86_64-linux", "nixos/25.05.806195.0f5b4f1c6a91-aarch64-linux"} {
		if ok, _ := path.Match(MustLookup("nixos").BaseName, name); ok {
			t.Errorf("nixos pattern finds %s", name)
		}
	}
}
