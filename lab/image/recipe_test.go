package image

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestRecipes: every recipe is complete, and its AMIs are named, owned and
// described as the release's publisher does, so that its own name pattern
// finds them.
func TestRecipes(t *testing.T) {
	names := map[string]bool{}
	ids := map[string]bool{}
	keys := map[string]string{}
	amiID := regexp.MustCompile(`^ami-[0-9a-f]{17}$`)
	for _, r := range Recipes() {
		if names[r.Name] {
			t.Errorf("recipe %s: name used twice", r.Name)
		}
		names[r.Name] = true
		if want := strings.TrimSuffix(string(r.Family)+"-"+r.VersionID+"-"+string(r.Init), "-"); r.Name != want {
			t.Errorf("recipe %s: name is not family-VERSION_ID[-init] (%s)", r.Name, want)
		}
		if r.Suite == "" || r.Mirror == "" || r.Security == "" || len(r.Components) == 0 || r.User == "" || r.Owner == "" {
			t.Errorf("recipe %s is incomplete: %+v", r.Name, r)
		}
		switch r.Family {
		case Debian:
			if r.Init != "" {
				// No one publishes a Debian without systemd: the lab's
				// own account does, as its user would.
				if r.Owner != LabOwner || r.User != "admin" || !slices.Contains(r.AllPackages(), "sysvinit-core") || slices.Contains(r.AllPackages(), "systemd") {
					t.Errorf("recipe %s: owner %s user %s packages %v; a Debian without systemd is the lab's own, user admin, sysvinit-core and no systemd", r.Name, r.Owner, r.User, r.AllPackages())
				}
			} else if r.Owner != DebianOwner || r.User != "admin" {
				t.Errorf("recipe %s: owner %s user %s; Debian's AMIs are %s's with user admin", r.Name, r.Owner, r.User, DebianOwner)
			}
		case Ubuntu:
			if r.Owner != CanonicalOwner || r.User != "ubuntu" || !strings.Contains(strings.Join(r.Components, " "), "universe") {
				t.Errorf("recipe %s: owner %s user %s components %v; Ubuntu's AMIs are %s's with user ubuntu, and buildbot-worker is in universe", r.Name, r.Owner, r.User, r.Components, CanonicalOwner)
			}
		default:
			t.Errorf("recipe %s: unknown family %q", r.Name, r.Family)
		}
		if k, ok := keys[BaseKey(r)]; ok {
			t.Errorf("recipes %s and %s have the same base key", r.Name, k)
		}
		keys[BaseKey(r)] = r.Name
		bootable := 0
		for _, a := range r.AMIs {
			if !amiID.MatchString(a.ID) || ids[a.ID] {
				t.Errorf("recipe %s: AMI ID %q is malformed or used twice", r.Name, a.ID)
			}
			ids[a.ID] = true
			if a.Bootable() {
				bootable++
				if ok, _ := path.Match(r.NamePattern, a.Name); !ok {
					t.Errorf("recipe %s: AMI %s is not found by its pattern %s", r.Name, a.Name, r.NamePattern)
				}
			}
			if a.Created.IsZero() || a.Description == "" || !strings.HasSuffix(a.Location, "/"+a.Name) || a.RootDevice == "" {
				t.Errorf("recipe %s: AMI %s is incomplete: %+v", r.Name, a.ID, a)
			}
		}
		if bootable == 0 {
			t.Errorf("recipe %s: no x86_64 AMI the lab can boot", r.Name)
		}
	}
	for _, name := range DefaultImages {
		if _, err := Lookup(name); err != nil {
			t.Errorf("default image: %v", err)
		}
	}
}

// TestDebian12Catalogue: the Debian 12 AMIs keep the IDs the README, the
// demo and other tests use.
func TestDebian12Catalogue(t *testing.T) {
	r, err := Lookup("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ami-0b7a1ac0d3e4f5061": "debian-12-amd64-20261001-1180",
		"ami-0c9e2f4d1a6b73852": "debian-12-amd64-20261101-1234",
		"ami-0d4f6b8a2c1e90573": "debian-12-arm64-20261101-1234",
	}
	for _, a := range r.AMIs {
		if want[a.ID] != a.Name {
			t.Errorf("debian-12 AMI %s is named %s; want %q", a.ID, a.Name, want[a.ID])
		}
		delete(want, a.ID)
		if a.Bootable() != (a.Arch == "x86_64") {
			t.Errorf("%s: bootable %v for %s", a.ID, a.Bootable(), a.Arch)
		}
	}
	if len(want) > 0 {
		t.Errorf("debian-12 AMIs missing: %v", want)
	}
	if got, want := r.AMIs[0].Description, "Debian 12 (20261001-1180)"; got != want {
		t.Errorf("description %q; want %q", got, want)
	}
}

func TestUbuntuAMI(t *testing.T) {
	a := ubuntuAMI("ami-0123456789abcdef0", "hvm-ssd-gp3", "noble", "24.04", "amd64", "20261113")
	if a.Name != "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20261113" ||
		a.Description != "Canonical, Ubuntu, 24.04 LTS, amd64 noble image build on 2026-11-13" ||
		a.Location != "amazon/"+a.Name || a.Arch != "x86_64" || a.RootDevice != "/dev/sda1" {
		t.Errorf("ubuntuAMI = %+v", a)
	}
}

func TestLookupUnknown(t *testing.T) {
	_, err := Lookup("nosuch")
	if err == nil || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), "debian-12") {
		t.Errorf("Lookup(nosuch) = %v; want an error naming it and the known releases", err)
	}
	if err := CanBuild("nosuch"); err == nil {
		t.Error("CanBuild(nosuch) = nil")
	}
}

func TestAptSources(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/share/keyrings"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/share/keyrings/ubuntu-archive-keyring.gpg"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deb822 := Recipe{Family: Ubuntu, Suite: "noble", Mirror: UbuntuMirror, Security: UbuntuSecurity, Components: []string{"main", "universe"}, Deb822: true}
	rel, got := aptSources(root, deb822)
	want := `Types: deb
URIs: http://archive.ubuntu.com/ubuntu
Suites: noble noble-updates
Components: main universe
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: http://security.ubuntu.com/ubuntu
Suites: noble-security
Components: main universe
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
`
	if rel != "etc/apt/sources.list.d/ubuntu.sources" || got != want {
		t.Errorf("deb822 sources: %s:\n%s\nwant:\n%s", rel, got, want)
	}
	oneLine := Recipe{Family: Debian, Suite: "bookworm", Mirror: DebianMirror, Security: DebianSecurity, Components: []string{"main"}}
	rel, got = aptSources(root, oneLine)
	want = "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n"
	if rel != "etc/apt/sources.list" || got != want {
		t.Errorf("one-line sources: %s:\n%s\nwant:\n%s", rel, got, want)
	}
}

func TestArchiveHosts(t *testing.T) {
	got := strings.Join(ArchiveHosts(), " ")
	for _, h := range []string{"deb.debian.org", "archive.ubuntu.com", "security.ubuntu.com"} {
		if !strings.Contains(got, h) {
			t.Errorf("ArchiveHosts() = %s; want %s in it", got, h)
		}
	}
}
