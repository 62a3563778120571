package platform

import (
	"errors"
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
		case p.Install != Package && p.Install != Pip:
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
		if p.Service == Systemd && !strings.Contains(p.ServiceName, "%s") {
			t.Errorf("%s: systemd unit %q is not a template", p.Name, p.ServiceName)
		}
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
