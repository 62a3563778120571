package image

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Recipe is one release the lab can boot: how its base root filesystem is
// built and prepared, and how AWS publishes its AMIs, which the lab's
// catalogue copies. Adding a release to the lab is one entry in recipes.
type Recipe struct {
	// Name is the release's name, as in the product's platform registry
	// and in lab files: "debian-12", "ubuntu-24.04".
	Name   string
	Family Family
	// VersionID is /etc/os-release's VERSION_ID in the release: "12", "24.04".
	VersionID string
	// Suite is the archive's codename, given to debootstrap: "bookworm".
	Suite string
	// Mirror is the archive the base is built from and the guests' apt
	// sources point at (through the lab's apt cache).
	Mirror string
	// Security is the archive of the release's security updates.
	Security string
	// Components of the archive the guests' sources enable (debootstrap
	// needs only main).
	Components []string
	// Keyring verifies the archive; "" for debootstrap's default (Debian's).
	Keyring string
	// Packages are installed beside CommonPackages.
	Packages []string
	// Deb822 writes the guests' sources as sources.list.d/<family>.sources
	// (what the release's cloud images have from Debian 13 and Ubuntu
	// 24.04 on) instead of a one-line sources.list.
	Deb822 bool
	// User is the login user of the release's cloud images, which the lab
	// creates with passwordless sudo and gives the key pair's public key.
	User string
	// Init is what boots the guest: "" (systemd, as every cloud image of
	// these releases), or InitSysV or InitOpenRC for a Debian without
	// systemd, a lab substitute for the distributions that have none.
	Init Init

	// Owner is the AWS account that publishes the release's AMIs.
	Owner string
	// NamePattern finds them by name (with Owner): the filter a client
	// uses to find the newest.
	NamePattern string
	// AMIs are the catalogue's images of the release, as AWS lists them.
	// The lab boots those whose architecture is x86_64.
	AMIs []AMI
}

// AMI is one published image of a release.
type AMI struct {
	ID          string
	Name        string
	Description string
	Arch        string // x86_64 or arm64
	Created     time.Time
	// Location is the image location AWS shows: OWNER/NAME, or
	// amazon/NAME for Canonical's.
	Location string
	// RootDevice is the root device name: /dev/xvda (Debian), /dev/sda1
	// (Ubuntu).
	RootDevice string
}

// Bootable reports whether the lab can boot the AMI: its rootfs is the
// recipe's amd64 base.
func (a AMI) Bootable() bool { return a.Arch == "x86_64" }

// Init is a guest's init system when it is not systemd.
type Init string

// Inits other than systemd.
const (
	// InitSysV: Debian's sysvinit-core as PID 1 with sysv-rc and
	// initscripts, and cron.
	InitSysV Init = "sysvinit"
	// InitOpenRC: Debian's openrc as the rc system on sysvinit-core's
	// PID 1 (as Debian ships it), and cron.
	InitOpenRC Init = "openrc"
)

// Family is how a release is prepared: what its cloud images do at boot.
type Family string

// Families.
const (
	// Debian: user admin; the apt-daily timers are masked, so nothing
	// takes the dpkg lock at boot.
	Debian Family = "debian"
	// Ubuntu: user ubuntu; unattended-upgrades installed and its timers
	// due, so that apt runs at first boot as on AWS (see prepareBase).
	Ubuntu Family = "ubuntu"
)

// AWS accounts that publish the official images.
const (
	DebianOwner    = "136693071363" // Debian's cloud team
	CanonicalOwner = "099720109477" // Canonical
	// LabOwner is the lab's own account (moto's), which owns the images no
	// one publishes: a Debian without systemd is an image its user makes
	// (owner "self" on AWS).
	LabOwner = "123456789012"
)

// Archives.
const (
	DebianMirror   = "http://deb.debian.org/debian"
	DebianSecurity = "http://deb.debian.org/debian-security"
	UbuntuMirror   = "http://archive.ubuntu.com/ubuntu"
	UbuntuSecurity = "http://security.ubuntu.com/ubuntu"
	UbuntuKeyring  = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
)

// CommonPackages are in every base image: what a cloud AMI has that
// provisioning relies on. A recipe with an Init other than systemd has
// that init's packages (InitPackages) instead of the first three.
var CommonPackages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "python3",
	"ca-certificates", "procps", "iproute2", "curl",
}

// systemdPackages are CommonPackages' init: what a recipe with another
// Init leaves out.
var systemdPackages = []string{"systemd", "systemd-sysv", "dbus"}

// InitPackages are what debootstrap includes for a recipe's Init instead
// of systemd's packages: Debian's sysvinit-core (with sysv-rc and
// initscripts) and cron, which a system without systemd's timers has.
// OpenRC is installed after debootstrap (AfterPackages): debootstrap
// resolves sysvinit-core's "sysv-rc | openrc" to sysv-rc, which openrc
// replaces.
var InitPackages = map[Init][]string{
	InitSysV:   {"sysvinit-core", "cron"},
	InitOpenRC: {"sysvinit-core", "cron"},
}

// AfterPackages are installed in the base after debootstrap, with its
// updates.
func (r Recipe) AfterPackages() []string {
	if r.Init == InitOpenRC {
		return []string{"openrc"}
	}
	return nil
}

// recipes are the releases the lab can boot. Keep them in this order:
// Debian, then Ubuntu, oldest first.
var recipes = []Recipe{
	{
		Name: "debian-12", Family: Debian, VersionID: "12", Suite: "bookworm",
		Mirror: DebianMirror, Security: DebianSecurity, Components: []string{"main"},
		User:  "admin",
		Owner: DebianOwner, NamePattern: "debian-12-amd64-*",
		AMIs: []AMI{
			debianAMI("ami-0b7a1ac0d3e4f5061", "12", "amd64", "20261001-1180", "12:03"),
			debianAMI("ami-0c9e2f4d1a6b73852", "12", "amd64", "20261101-1234", "11:48"),
			debianAMI("ami-0d4f6b8a2c1e90573", "12", "arm64", "20261101-1234", "11:48"),
		},
	},
	{
		Name: "debian-13", Family: Debian, VersionID: "13", Suite: "trixie",
		Mirror: DebianMirror, Security: DebianSecurity, Components: []string{"main"},
		Deb822: true,
		User:   "admin",
		Owner:  DebianOwner, NamePattern: "debian-13-amd64-*",
		AMIs: []AMI{
			debianAMI("ami-03a1d5e7c9b24f680", "13", "amd64", "20261001-1180", "12:10"),
			debianAMI("ami-04b2e6f8dac35a791", "13", "amd64", "20261101-1234", "11:55"),
		},
	},
	// Debian 12 without systemd: no one publishes such an AMI, so the lab
	// makes one in its own account, as a user would.
	{
		Name: "debian-12-sysvinit", Family: Debian, VersionID: "12", Suite: "bookworm", Init: InitSysV,
		Mirror: DebianMirror, Security: DebianSecurity, Components: []string{"main"},
		User:  "admin",
		Owner: LabOwner, NamePattern: "debian-12-sysvinit-amd64-*",
		AMIs: []AMI{
			labAMI("ami-0e1f3a5c7b9d20461", "debian-12-sysvinit-amd64-20261101", "Debian 12 booted with sysvinit-core (no systemd): a lab substitute, no official AMI"),
		},
	},
	{
		Name: "debian-12-openrc", Family: Debian, VersionID: "12", Suite: "bookworm", Init: InitOpenRC,
		Mirror: DebianMirror, Security: DebianSecurity, Components: []string{"main"},
		User:  "admin",
		Owner: LabOwner, NamePattern: "debian-12-openrc-amd64-*",
		AMIs: []AMI{
			labAMI("ami-0f2a4b6d8c0e31572", "debian-12-openrc-amd64-20261101", "Debian 12 booted with OpenRC on sysvinit-core (no systemd): a lab substitute, no official AMI"),
		},
	},
	{
		Name: "ubuntu-22.04", Family: Ubuntu, VersionID: "22.04", Suite: "jammy",
		Mirror: UbuntuMirror, Security: UbuntuSecurity, Components: []string{"main", "universe"},
		Keyring: UbuntuKeyring, Packages: []string{"unattended-upgrades"},
		User:  "ubuntu",
		Owner: CanonicalOwner, NamePattern: "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*",
		AMIs: []AMI{
			ubuntuAMI("ami-05e1b7c9d3f48a026", "hvm-ssd", "jammy", "22.04", "amd64", "20261016"),
			ubuntuAMI("ami-06f2c8d0e4a59b137", "hvm-ssd", "jammy", "22.04", "amd64", "20261113"),
		},
	},
	{
		Name: "ubuntu-24.04", Family: Ubuntu, VersionID: "24.04", Suite: "noble",
		Mirror: UbuntuMirror, Security: UbuntuSecurity, Components: []string{"main", "universe"},
		Keyring: UbuntuKeyring, Packages: []string{"unattended-upgrades"}, Deb822: true,
		User:  "ubuntu",
		Owner: CanonicalOwner, NamePattern: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
		AMIs: []AMI{
			ubuntuAMI("ami-07c3f9a1b5d26e804", "hvm-ssd-gp3", "noble", "24.04", "amd64", "20261016"),
			ubuntuAMI("ami-08d4a0b2c6e37f915", "hvm-ssd-gp3", "noble", "24.04", "amd64", "20261113"),
		},
	},
}

// debianAMI is an AMI as Debian's cloud team publishes it: serial is
// YYYYMMDD-NNNN, at is the creation time of day (UTC, hh:mm).
func debianAMI(id, version, arch, serial, at string) AMI {
	name := "debian-" + version + "-" + arch + "-" + serial
	return AMI{
		ID: id, Name: name, Arch: awsArch(arch),
		Description: "Debian " + version + " (" + serial + ")",
		Created:     mustTime(serial[:8] + " " + at),
		Location:    DebianOwner + "/" + name,
		RootDevice:  "/dev/xvda",
	}
}

// labAMI is an image of the lab's own account (a Debian without systemd,
// made as a user makes one): name ends in YYYYMMDD.
func labAMI(id, name, description string) AMI {
	return AMI{
		ID: id, Name: name, Arch: "x86_64", Description: description,
		Created:    mustTime(name[len(name)-8:] + " 12:00"),
		Location:   LabOwner + "/" + name,
		RootDevice: "/dev/xvda",
	}
}

// ubuntuAMI is an AMI as Canonical publishes it: volume is hvm-ssd (up to
// 22.04) or hvm-ssd-gp3 (from 23.10), serial is YYYYMMDD.
func ubuntuAMI(id, volume, suite, version, arch, serial string) AMI {
	name := "ubuntu/images/" + volume + "/ubuntu-" + suite + "-" + version + "-" + arch + "-server-" + serial
	created := mustTime(serial + " 09:30")
	lts := ""
	if strings.HasSuffix(version, ".04") && (version[0]-'0')%2 == 0 {
		lts = " LTS"
	}
	return AMI{
		ID: id, Name: name, Arch: awsArch(arch),
		Description: "Canonical, Ubuntu, " + version + lts + ", " + arch + " " + suite + " image build on " + created.Format("2006-01-02"),
		Created:     created,
		Location:    "amazon/" + name,
		RootDevice:  "/dev/sda1",
	}
}

func awsArch(arch string) string {
	if arch == "amd64" {
		return "x86_64"
	}
	return arch
}

func mustTime(s string) time.Time {
	t, err := time.Parse("20060102 15:04", s)
	if err != nil {
		panic("image: bad AMI date " + s)
	}
	return t
}

// Recipes returns every release the lab can boot, in catalogue order.
func Recipes() []Recipe { return append([]Recipe(nil), recipes...) }

// Names returns the names of the releases the lab can boot.
func Names() []string {
	var out []string
	for _, r := range recipes {
		out = append(out, r.Name)
	}
	return out
}

// Lookup finds a release's recipe by name.
func Lookup(name string) (Recipe, error) {
	for _, r := range recipes {
		if r.Name == name {
			return r, nil
		}
	}
	return Recipe{}, fmt.Errorf("no lab image %q: the lab can boot %s", name, strings.Join(Names(), ", "))
}

// DefaultImages are the releases `latentlab up` builds before it starts
// when the lab file names none; others are built on first launch.
var DefaultImages = []string{"debian-12"}

// ArchiveHosts are the hosts of every recipe's archives, which the lab's
// apt cache must let guests reach.
func ArchiveHosts() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range recipes {
		for _, u := range []string{r.Mirror, r.Security} {
			h, err := url.Parse(u)
			if err != nil || h.Host == "" || seen[h.Host] {
				continue
			}
			seen[h.Host] = true
			out = append(out, h.Host)
		}
	}
	return out
}

// AllPackages are the packages debootstrap includes for r, sorted.
func (r Recipe) AllPackages() []string {
	var pkgs []string
	for _, p := range CommonPackages {
		if r.Init == "" || !slices.Contains(systemdPackages, p) {
			pkgs = append(pkgs, p)
		}
	}
	pkgs = append(append(pkgs, InitPackages[r.Init]...), r.Packages...)
	sort.Strings(pkgs)
	return pkgs
}
