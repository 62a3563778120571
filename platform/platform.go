// Package platform is the registry of the operating systems latentworker
// turns into buildbot workers: one value per platform, in one table
// (registry.go), holding everything the rest of the tool needs to know
// about it — where its base images come from on AWS, how to log in, how the
// worker is installed and started, how a pending reboot shows, what
// verification must see and how well all that is proved.
//
// It owns facts, not behaviour: it runs nothing, renders no script and
// talks to no service. Package scripts renders a platform's scripts from its
// family and package manager; package provision picks the shell that runs
// them from its Shell; package bake asks it for its key type, user, port and
// host-key source. No other package compares platform names.
package platform

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Family is a group of platforms that share a script core.
type Family string

// Families.
const (
	Linux   Family = "linux"
	FreeBSD Family = "freebsd"
	OpenBSD Family = "openbsd"
	MacOS   Family = "macos"
	Windows Family = "windows"
)

// Shell is the command language of a platform's login sessions, which
// decides how commands are built (package provision).
type Shell string

// Shells.
const (
	POSIX      Shell = "posix"
	PowerShell Shell = "powershell"
)

// Install says how buildbot-worker gets onto the machine.
type Install string

// Install methods.
const (
	// Package is the distribution's package, which brings the service
	// account, directories and service definition.
	Package Install = "package"
	// Pip is `pip install buildbot-worker` into a virtual environment, with
	// the account, directories and service made by hand (the guide's
	// fallback).
	Pip Install = "pip"
	// NixOSModule is NixOS's services.buildbot-worker module, enabled by a
	// fragment of /etc/nixos/configuration.nix and nixos-rebuild switch
	// (the guide's advice for NixOS): the module makes the account, the
	// worker's directory, its buildbot.tac and the systemd unit.
	NixOSModule Install = "nixos-module"
)

// Service is what starts the worker at boot.
type Service string

// Service mechanisms.
const (
	Systemd       Service = "systemd"        // a templated unit buildbot-worker@NAME.service
	SysVInit      Service = "sysv-init"      // /etc/init.d/buildbot-worker and its /etc/default/buildbot-worker, enabled with update-rc.d
	OpenRC        Service = "openrc"         // an openrc-run service buildbot-worker.NAME, added to the default runlevel
	Cron          Service = "cron"           // the guide's cron job: @reboot buildbot-worker restart DIR
	RCd           Service = "rc.d"           // BSD rc.d script
	Launchd       Service = "launchd"        // a LaunchDaemon plist
	ScheduledTask Service = "scheduled-task" // a Windows task "at startup"
)

// KeyType is the type of the temporary SSH key pair bake imports.
type KeyType string

// Key types EC2 imports.
const (
	Ed25519 KeyType = "ed25519"
	RSA     KeyType = "rsa" // the only type EC2 accepts for Windows
)

// HostKeySource is where an instance's SSH host keys can be read before
// the first connection, so that they are pinned, not trusted on first use.
type HostKeySource string

// Host key sources.
const (
	// CloudInit: cloud-init's "BEGIN SSH HOST KEY FINGERPRINTS" and
	// "BEGIN SSH HOST KEY KEYS" blocks on the console.
	CloudInit HostKeySource = "cloud-init"
	// FreeBSDConsole: the "ec2: " prefixed fingerprint and key lines of
	// FreeBSD's ec2 rc scripts.
	FreeBSDConsole HostKeySource = "freebsd-console"
	// UserDataConsole: lines the launch user data prints between
	// latentworker's own markers (Windows).
	UserDataConsole HostKeySource = "user-data-console"
	// NoConsole: the console shows none; the key is trusted on first use
	// with a warning.
	NoConsole HostKeySource = "none"
)

// Root is how a login user runs a command as the administrator.
type Root string

// Ways to become root.
const (
	Sudo     Root = "sudo" // sudo -n: never prompts, never reads stdin
	Doas     Root = "doas" // doas -n
	SuRoot   Root = "su"   // su root -c (FreeBSD's ec2-user is in wheel; root has no password)
	Elevated Root = ""     // already the administrator (Windows' Administrator)
)

// Proof says what proves a platform works: a real bake in the lab, or only
// static checks (golden files, linters, parsers, unit tests).
type Proof string

// Proof levels.
const (
	ProvedByLab    Proof = "lab"
	ProvedByStatic Proof = "static"
)

// Platform is one operating system release as latentworker bakes it.
type Platform struct {
	// Name is the registry key, e.g. "debian-12"; Aliases are other names
	// accepted for it ("debian").
	Name    string
	Aliases []string
	// Title names it for people: "Debian 12 (bookworm)".
	Title  string
	Family Family
	Shell  Shell
	// PackageManager names the script fragment of the Linux family that
	// installs and updates packages: "apt" or "dnf". Empty elsewhere.
	PackageManager string
	// Repos are repositories or components to enable before installing
	// (Ubuntu's "universe"; "epel", "crb" on the RPM family).
	Repos []string

	// BaseOwner and BaseName find the newest base image on AWS: the
	// publisher's account (or alias) and the AMI name pattern (* and ?).
	// BaseName is empty when there is no official image (the user gives
	// image.base_ami).
	BaseOwner, BaseName string
	// SSHUser is the login user of the base image; SSHPort its SSH port.
	SSHUser string
	SSHPort int
	// KeyType is the temporary key's type.
	KeyType KeyType
	// Root is how SSHUser runs commands as root.
	Root Root
	// HostKeys is where the instance's host keys are read before connecting.
	HostKeys HostKeySource

	// Install is how buildbot-worker is installed; Package is the
	// distribution's package name (Install == Package).
	Install Install
	Package string
	// WorkerUser is the account the worker runs as; WorkersDir holds one
	// directory per worker (the package's convention, or the guide's pip
	// layout).
	WorkerUser string
	WorkersDir string
	// WorkerGroup is the primary group of WorkerUser when it is not a group
	// of the same name (macOS' standard users are in "staff"); "" means
	// WorkerUser. Windows has no such pair: the worker's files are owned by
	// WorkerUser alone.
	WorkerGroup string
	// Service starts the worker at boot; ServiceName is its name for the
	// worker NAME with "%s" for NAME ("buildbot-worker@%s.service").
	Service     Service
	ServiceName string

	// RebootCheck says how a pending reboot is detected after updates.
	RebootCheck string
	// Verify lists what verification must see on the instance, after a
	// reboot and on an instance booted from the new image.
	Verify []string

	// ImageWait bounds the wait for a new image to become available; an
	// image still pending then is kept for `bake --resume`.
	ImageWait time.Duration

	// NeedsHost: instances run only on a dedicated host the user names
	// (aws.host_id), as mac instances do.
	NeedsHost bool

	// Python is the python.org installer Setup installs where the OS has
	// no Python of its own (Windows); nil elsewhere.
	Python *PythonInstaller

	// BuildDeps is what a CPython build needs on it (the devguide's list
	// for its package manager), installed unless image.cpython_build_deps
	// is false; nil when there is none.
	BuildDeps *BuildDeps

	ProvedBy Proof
	// Proof says in one sentence what proves it here and what is left to
	// prove on AWS.
	Proof string
}

// PythonInstaller pins one python.org installer: its version, where it is
// downloaded from and the SHA-256 of the file, checked before it runs.
type PythonInstaller struct {
	Version string
	URL     string
	SHA256  string
}

// Group returns the primary group of the worker's account.
func (p *Platform) Group() string {
	if p.WorkerGroup != "" {
		return p.WorkerGroup
	}
	return p.WorkerUser
}

// Unit returns the service name of the worker called worker.
func (p *Platform) Unit(worker string) string {
	if !strings.Contains(p.ServiceName, "%s") {
		return p.ServiceName
	}
	return fmt.Sprintf(p.ServiceName, worker)
}

// WorkerDir returns the directory of the worker called worker.
func (p *Platform) WorkerDir(worker string) string {
	return strings.TrimRight(p.WorkersDir, `/\`) + p.pathSep() + worker
}

func (p *Platform) pathSep() string {
	if p.Shell == PowerShell {
		return `\`
	}
	return "/"
}

// The guide's layout for buildbot-worker installed with pip (and the RPM's):
// a system user buildbot-worker and one directory per worker under
// /var/lib/buildbot/worker.
const (
	PipWorkerUser = "buildbot-worker"
	PipWorkersDir = "/var/lib/buildbot/worker"
)

// WithPip returns a copy of p that installs buildbot-worker with pip (the
// guide's fallback, image.install = "pip"): no package, the guide's user,
// directory and templated systemd unit. p itself is returned when it already
// installs with pip.
func (p *Platform) WithPip() *Platform {
	if p.Install == Pip {
		return p
	}
	c := *p
	c.Install, c.Package = Pip, ""
	c.WorkerUser, c.WorkersDir = PipWorkerUser, PipWorkersDir
	c.Service, c.ServiceName = Systemd, "buildbot-worker@%s.service"
	return &c
}

// OfficialBase reports whether AWS has an official base image to find by
// filter; without one the user must give image.base_ami and image.ssh_user.
func (p *Platform) OfficialBase() bool { return p.BaseOwner != "" && p.BaseName != "" }

// ErrUnknown is returned (wrapped) by Lookup for a name not in the registry.
var ErrUnknown = errors.New("unknown platform")

// Lookup returns the platform called name or one of its aliases.
func Lookup(name string) (*Platform, error) {
	for _, p := range registry {
		if p.Name == name || slices.Contains(p.Aliases, name) {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w %q: known platforms are %s", ErrUnknown, name, strings.Join(Names(), ", "))
}

// MustLookup is Lookup for names known to be in the registry (tests,
// defaults); it panics otherwise.
func MustLookup(name string) *Platform {
	p, err := Lookup(name)
	if err != nil {
		panic(err)
	}
	return p
}

// All returns every platform, in the registry's order. The values are
// shared: do not modify them.
func All() []*Platform { return slices.Clone(registry) }

// Names returns every platform's name and alias, in the registry's order,
// each alias after its platform.
func Names() []string {
	var n []string
	for _, p := range registry {
		n = append(n, p.Name)
		n = append(n, p.Aliases...)
	}
	return n
}

// Default is the platform of a configuration that names none.
const Default = "debian-12"
