package platform

import (
	"fmt"
	"time"
)

// The registry: every platform latentworker knows, one entry each. Adding a
// Linux release is one entry here, its script fragment when its package
// manager is new (scripts/linux/PM.sh.tmpl), its golden files, and its lab
// image recipe when the lab can boot it (lab/image).

// What verification must see on every systemd worker (after the reboot
// that follows updates, and on an instance booted from the new image).
var systemdVerify = []string{
	"buildbot.tac naming the master, the worker and its password, with keepalive = 60 and delete_leftover_dirs = 1, owned by the worker's account",
	"info/admin with the obfuscated contact and info/host",
	"the worker's unit enabled, and active after the boot (or refused by a master that runs it as a latent worker)",
}

// The Debian/Ubuntu package: user buildbot, /var/lib/buildbot/workers,
// buildbot-worker@.service.
const (
	debianWorkerUser = "buildbot"
	debianWorkersDir = "/var/lib/buildbot/workers"
	workerUnit       = "buildbot-worker@%s.service"
	// linuxImageWait: a Linux root volume of 30 GiB is usually imaged in
	// minutes; an hour leaves room for a slow snapshot.
	linuxImageWait = 60 * time.Minute
	aptRebootCheck = "/var/run/reboot-required, the default kernel against the running one, needrestart's kernel status"
)

// labProof is the proof of a platform the lab bakes: release names its root
// filesystem, worker the buildbot-worker it installs.
func labProof(release, worker string) string {
	return fmt.Sprintf("baked in the lab from the newest base image found by its AWS owner and name: "+
		"a real %s root filesystem booted with systemd-nspawn, where buildbot-worker %s is installed, "+
		"configured, updated, rebooted, imaged and booted again and connects to a real buildbot master; "+
		"left to prove on AWS: the real AMI's kernel, cloud-init and first boot", release, worker)
}

// debianPackage completes an entry of the Debian family (Debian, Ubuntu):
// apt, the buildbot-worker package with its buildbot user, workers
// directory and templated unit, an ed25519 key, sudo and cloud-init's
// console host keys.
func debianPackage(p Platform) *Platform {
	p.Family, p.Shell, p.PackageManager = Linux, POSIX, "apt"
	p.SSHPort, p.KeyType, p.Root, p.HostKeys = 22, Ed25519, Sudo, CloudInit
	p.Install, p.Package, p.WorkerUser, p.WorkersDir = Package, "buildbot-worker", debianWorkerUser, debianWorkersDir
	p.Service, p.ServiceName = Systemd, workerUnit
	p.RebootCheck, p.Verify = aptRebootCheck, systemdVerify
	p.ImageWait = linuxImageWait
	return &p
}

// The RPM family (Fedora, RHEL and its rebuilds): dnf, and the package's
// buildbot-worker user, /var/lib/buildbot/worker and templated unit (the
// guide's "Fedora / RHEL / CentOS" tab), which the pip path shares.
const dnfRebootCheck = "dnf needs-restarting (dnf5) or needs-restarting -r (dnf-utils), else the newest installed kernel against the running one"

// rpmProof is the proof of an RPM-family platform installed from its
// package: what static checks and the lab prove here, and what is left.
func rpmProof(repos string) string {
	return "static: no RPM repository or image is reachable here, so the install half (dnf" + repos + ", the buildbot-worker package) is only golden-tested and shellchecked, " +
		"while the configure half (user buildbot-worker, /var/lib/buildbot/worker, create-worker, info, buildbot.tac, the templated unit, SELinux contexts) " +
		"runs in the lab in a Debian guest laid out as the RPM lays it out, with buildbot-worker from pip, whose worker connects to a real master after a reboot; " +
		"left to prove on AWS: dnf, the repositories, SELinux enforcing and the real AMI, and that dnf builddep python3 " +
		"and every name of the build dependencies' list (platform.BuildDeps, scripts/testdata/*-builddeps.sh.golden) install there"
}

// rpmPackage completes an entry of the RPM family that installs the
// buildbot-worker package with dnf; ec2-user (or the entry's own user)
// with sudo and cloud-init's console host keys.
func rpmPackage(p Platform) *Platform {
	p.Family, p.Shell, p.PackageManager = Linux, POSIX, "dnf"
	p.SSHPort, p.KeyType, p.Root, p.HostKeys = 22, Ed25519, Sudo, CloudInit
	p.Install, p.Package, p.WorkerUser, p.WorkersDir = Package, "buildbot-worker", PipWorkerUser, PipWorkersDir
	p.Service, p.ServiceName = Systemd, workerUnit
	p.RebootCheck, p.Verify = dnfRebootCheck, systemdVerify
	p.ImageWait = linuxImageWait
	p.ProvedBy = ProvedByStatic
	return &p
}

var registry = []*Platform{
	debianPackage(Platform{
		Name: "debian-12", Aliases: []string{"debian"}, Title: "Debian 12 (bookworm)",
		BaseOwner: "136693071363", BaseName: "debian-12-amd64-*", SSHUser: "admin",
		BuildDeps: aptBuildDeps("libmpdec-dev"),
		ProvedBy:  ProvedByLab, Proof: labProof("Debian 12", "3.7") +
			"; with image.install = \"pip\" it is baked the same way with buildbot-worker from PyPI in a venv, the guide's user, directory and unit, and refreshed (Setup a second time)",
	}),
	debianPackage(Platform{
		Name: "debian-13", Title: "Debian 13 (trixie)",
		BaseOwner: "136693071363", BaseName: "debian-13-amd64-*", SSHUser: "admin",
		BuildDeps: aptBuildDeps("lzma-dev"),
		ProvedBy:  ProvedByLab, Proof: labProof("Debian 13", "4.2"),
	}),
	debianPackage(Platform{
		Name: "ubuntu-22.04", Title: "Ubuntu 22.04 LTS (jammy)", Repos: []string{"universe"},
		BaseOwner: "099720109477", BaseName: "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*", SSHUser: "ubuntu",
		BuildDeps: aptBuildDeps(),
		ProvedBy:  ProvedByLab, Proof: labProof("Ubuntu 22.04", "3.4 (universe)"),
	}),
	debianPackage(Platform{
		Name: "ubuntu-24.04", Aliases: []string{"ubuntu"}, Title: "Ubuntu 24.04 LTS (noble)", Repos: []string{"universe"},
		BaseOwner: "099720109477", BaseName: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", SSHUser: "ubuntu",
		BuildDeps: aptBuildDeps("libmpdec-dev"),
		ProvedBy:  ProvedByLab, Proof: labProof("Ubuntu 24.04", "3.10 (universe)"),
	}),
	// The RPM family and Amazon Linux (issue 10): AWS owners and name
	// patterns as the publishers document them (fedoraproject.org/cloud,
	// centos.org/download/aws-images, wiki.almalinux.org/cloud/AWS,
	// rockylinux.org, Red Hat's hourly RHEL images, docs.aws.amazon.com for
	// AL2023).
	rpmPackage(Platform{
		// 4?- matches releases 40-49 and neither Rawhide nor betas
		// (44_Beta): the newest stable release wins.
		Name: "fedora", Title: "Fedora (current release)",
		BaseOwner: "125523088429", BaseName: "Fedora-Cloud-Base-AmazonEC2.x86_64-4?-*", SSHUser: "fedora",
		BuildDeps: dnfBuildDeps("lcov", "mpdecimal-devel", "libb2-devel"),
		Proof:     rpmProof(""),
	}),
	rpmPackage(Platform{
		Name: "rhel-8", Title: "Red Hat Enterprise Linux 8", Repos: []string{"codeready-builder-for-rhel-8-rhui-rpms", "epel"},
		BaseOwner: "309956199498", BaseName: "RHEL-8.*_HVM-*-x86_64-*-Hourly2-GP3", SSHUser: "ec2-user",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CodeReady Linux Builder from RHUI, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "rhel-9", Title: "Red Hat Enterprise Linux 9", Repos: []string{"codeready-builder-for-rhel-9-rhui-rpms", "epel"},
		BaseOwner: "309956199498", BaseName: "RHEL-9.*_HVM-*-x86_64-*-Hourly2-GP3", SSHUser: "ec2-user",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CodeReady Linux Builder from RHUI, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "centos-stream-9", Title: "CentOS Stream 9", Repos: []string{"crb", "epel", "epel-next"},
		BaseOwner: "125523088429", BaseName: "CentOS Stream 9 x86_64 *", SSHUser: "ec2-user",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CRB, EPEL, EPEL Next"),
	}),
	rpmPackage(Platform{
		// EPEL 10 has no EPEL Next: its minor releases follow Stream.
		Name: "centos-stream-10", Title: "CentOS Stream 10", Repos: []string{"crb", "epel"},
		BaseOwner: "125523088429", BaseName: "CentOS Stream 10 x86_64 *", SSHUser: "ec2-user",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CRB, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "almalinux-9", Title: "AlmaLinux OS 9", Repos: []string{"crb", "epel"},
		BaseOwner: "764336703387", BaseName: "AlmaLinux OS 9.* x86_64", SSHUser: "ec2-user",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CRB, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "rocky-9", Title: "Rocky Linux 9", Repos: []string{"crb", "epel"},
		BaseOwner: "792107900819", BaseName: "Rocky-9-EC2-Base-9.*.x86_64", SSHUser: "rocky",
		BuildDeps: dnfBuildDeps("lcov"),
		Proof:     rpmProof(", CRB, EPEL"),
	}),
	func() *Platform {
		// No buildbot-worker package (and no EPEL): the guide's pip path.
		p := rpmPackage(Platform{
			Name: "amazonlinux-2023", Aliases: []string{"al2023"}, Title: "Amazon Linux 2023",
			BaseOwner: "amazon", BaseName: "al2023-ami-2023.*-x86_64", SSHUser: "ec2-user",
			BuildDeps: dnfBuildDeps(),
			Proof: "static: no Amazon Linux repository or image is reachable here, so its dnf half (python3-pip, dnf upgrade, needs-restarting) is only golden-tested and shellchecked, " +
				"while its pip half (a venv in /opt/buildbot-worker, pip install buildbot-worker, the system user, /var/lib/buildbot/worker, the guide's unit) " +
				"is the same script the lab bakes for real on Debian 12 with image.install = \"pip\": PyPI, a reboot, a worker that connects to a real master from the new image; " +
				"left to prove on AWS: AL2023's dnf and Python with the newest buildbot-worker, and every name of the build " +
				"dependencies' list (dnf builddep python3 may find no source repository: a warning)",
		}).WithPip()
		return p
	}(),
}

// Linux without systemd, and the guide's other Linux systems (issue 19):
// the SysV init and cron tabs, Alpine with OpenRC, Arch and NixOS.

// What verification must see on a worker started by SysV init or OpenRC
// (service says how it is enabled).
func initVerify(service string) []string {
	return []string{
		systemdVerify[0], systemdVerify[1],
		service + ", and the worker running after the boot (or started in this boot and refused by a master that runs it as a latent worker)",
	}
}

// The guide's pip layout without systemd: the worker's account and
// directory, and a service the init system starts.
const (
	sysvService   = "buildbot-worker"
	openrcService = "buildbot-worker.%s"
)

// debianInit completes an entry of Debian 12 booted with another init
// than systemd: apt, buildbot-worker from PyPI in a venv (the guide's
// pip path: Debian's package brings a systemd unit only), the guide's
// user and directory, admin with sudo and cloud-init's console host keys.
// There is no official AMI of such a Debian: the base is an image of your
// own, found in your account ("self") by name, or image.base_ami.
func debianInit(p Platform) *Platform {
	p.Family, p.Shell, p.PackageManager = Linux, POSIX, "apt"
	p.BaseOwner, p.SSHUser = "self", "admin"
	p.SSHPort, p.KeyType, p.Root, p.HostKeys = 22, Ed25519, Sudo, CloudInit
	p.Install, p.WorkerUser, p.WorkersDir = Pip, PipWorkerUser, PipWorkersDir
	// Debian 12's archive: no libmpdec-dev (as debian-12).
	p.BuildDeps = aptBuildDeps("libmpdec-dev")
	p.RebootCheck = aptRebootCheck
	p.ImageWait = linuxImageWait
	p.ProvedBy = ProvedByLab
	return &p
}

// initLabProof is the proof of a Debian guest booted with init: what the
// lab proves and what is left.
func initLabProof(init, boot, service string) string {
	return "baked in the lab, a substitute for a distribution without systemd: no official AMI boots Debian with " + init + ", so the lab builds one " +
		"(debootstrap, " + boot + " under systemd-nspawn, published in the lab's own account as debian-12-*-amd64-*), " +
		"where buildbot-worker from PyPI is installed with " + service + ", updated, rebooted for real, imaged and booted again and connects to a real buildbot master; " +
		"left to prove on AWS: a base image of your own with this init, its kernel, console and cloud-init"
}

var noSystemd = []*Platform{
	debianInit(Platform{
		Name: "debian-12-sysvinit", Title: "Debian 12 with SysV init (sysvinit-core)",
		BaseName: "debian-12-sysvinit-amd64-*",
		Service:  SysVInit, ServiceName: sysvService,
		Verify: initVerify("/etc/init.d/buildbot-worker enabled with update-rc.d and the worker enabled in /etc/default/buildbot-worker"),
		Proof:  initLabProof("sysvinit-core", "sysvinit-core as PID 1", "the guide's SysV init script (/etc/init.d/buildbot-worker, /etc/default/buildbot-worker, update-rc.d)"),
	}),
	debianInit(Platform{
		Name: "debian-12-openrc", Title: "Debian 12 with OpenRC (openrc on sysvinit-core)",
		BaseName: "debian-12-openrc-amd64-*",
		Service:  OpenRC, ServiceName: openrcService,
		Verify: initVerify("the OpenRC service buildbot-worker.NAME in the default runlevel"),
		Proof:  initLabProof("OpenRC", "OpenRC on sysvinit-core's PID 1 (Debian's openrc)", "the OpenRC service Alpine uses too (/etc/init.d/buildbot-worker.NAME, /etc/conf.d, rc-update)"),
	}),
	{
		// Alpine's cloud images, the cloud-init flavour (its tiny-cloud
		// flavour prints no host keys): alpinelinux.org/cloud publishes
		// them from 538276064493 as alpine-VERSION-ARCH-FIRMWARE-BOOTSTRAP-rN
		// (the alpine-cloud-images README), user alpine with doas.
		Name: "alpine", Title: "Alpine Linux 3 (OpenRC, BusyBox)",
		Family: Linux, Shell: POSIX, PackageManager: "apk",
		BaseOwner: "538276064493", BaseName: "alpine-3.*-x86_64-bios-cloudinit-r*", SSHUser: "alpine",
		SSHPort: 22, KeyType: Ed25519, Root: Doas, HostKeys: CloudInit,
		Install: Pip, WorkerUser: PipWorkerUser, WorkersDir: PipWorkersDir, BuildDeps: alpineBuildDeps,
		Service: OpenRC, ServiceName: openrcService, ImageWait: linuxImageWait,
		RebootCheck: "the kernel modules of the running kernel gone (apk replaced the kernel package)",
		Verify:      initVerify("the OpenRC service buildbot-worker.NAME in the default runlevel"),
		ProvedBy:    ProvedByStatic,
		Proof: "static: no Alpine repository or image is reachable here, so its apk half (python3, py3-pip, runuser, apk upgrade) and BusyBox's adduser are only golden-tested and shellchecked, " +
			"while its OpenRC service and configure half run in the lab on Debian 12 with OpenRC (debian-12-openrc: a worker that connects after a real reboot); " +
			"left to prove on AWS: doas without a password for alpine, cloud-init's console host keys, apk and musl's Python with the newest buildbot-worker, and every name of the build dependencies' list",
	},
	{
		// No official AMI: ArchWiki ("Arch Linux AMIs for Amazon Web
		// Services") lists community images only, whose cloud-init took
		// RSA keys only; pacman for Python, pip for the worker (the guide:
		// the AUR packages are unmaintained).
		Name: "arch", Title: "Arch Linux",
		Family: Linux, Shell: POSIX, PackageManager: "pacman",
		SSHPort: 22, KeyType: RSA, Root: Sudo, HostKeys: CloudInit,
		Install: Pip, WorkerUser: PipWorkerUser, WorkersDir: PipWorkersDir, BuildDeps: archBuildDeps,
		Service: Systemd, ServiceName: workerUnit, ImageWait: linuxImageWait,
		RebootCheck: "the kernel modules of the running kernel gone (pacman replaced the linux package), or the installed linux package's version not the running kernel's",
		Verify:      systemdVerify,
		ProvedBy:    ProvedByStatic,
		Proof: "static: there is no official Arch AMI (the community's, listed at arch-ami-list.drzee.net, log in as arch) and no Arch repository is reachable here, " +
			"so its pacman half (python, pacman -Syu, the kernel check) is only golden-tested and shellchecked, while its pip half and the guide's unit are what the lab bakes on Debian 12 with image.install = \"pip\"; " +
			"left to prove on AWS: the image you name, its sudo and cloud-init, pacman -Syu and Arch's Python with the newest buildbot-worker, and every name of the build dependencies' list",
	},
	{
		// nixos.org/download (Amazon EC2) and the NixOS AMIs' users find
		// them from 427812963091 as nixos/RELEASE.REV-ARCH-linux; YY.05
		// and YY.11 releases, not unstable (YY.11pre...).
		Name: "nixos", Title: "NixOS (services.buildbot-worker)",
		Family: Linux, Shell: POSIX, PackageManager: "nix",
		BaseOwner: "427812963091", BaseName: "nixos/2?.?[15].*-x86_64-linux", SSHUser: "root",
		SSHPort: 22, KeyType: Ed25519, Root: Elevated, HostKeys: CloudInit,
		Install: NixOSModule, Package: "services.buildbot-worker", BuildDeps: nixosBuildDeps,
		WorkerUser: "bbworker", WorkersDir: "/home/bbworker",
		Service: Systemd, ServiceName: "buildbot-worker.service", ImageWait: linuxImageWait,
		RebootCheck: "the booted system's kernel, initrd or kernel modules not the current system's (/run/booted-system against /run/current-system)",
		Verify: []string{
			"the module's buildbot.tac (in the Nix store) naming the master, the worker and the password file, with keepalive = 60 (the module has no delete_leftover_dirs)",
			"info/admin with the obfuscated contact and info/host",
			systemdVerify[2],
		},
		ProvedBy: ProvedByStatic,
		Proof: "static: no Nix channel or NixOS image is reachable here, so the module fragment, nixos-rebuild switch and the NixOS scripts are only golden-tested and shellchecked; " +
			"left to prove on AWS: that the fragment evaluates with the image's nixpkgs, root's login, the fingerprints NixOS prints on the console, the module's worker connecting after a reboot, and a CPython build finding the build dependencies' headers in the system profile",
	},
}

// Beyond Linux: platforms no machine here can boot, proved by static checks
// only (golden files, shellcheck, a PowerShell parser, unit tests of the
// shell's commands and of each console's host-key format).

// staticProof is the proof of a platform proved only statically; aws says
// what a first bake on AWS must confirm.
func staticProof(aws string) string {
	return "proved statically only: its scripts and launch user data are rendered to golden files " +
		"and pass shellcheck (sh) or a real PowerShell parse, and the commands that run them and " +
		"the parsing of its console's host keys are unit-tested; a first bake on AWS must confirm " + aws
}

// python312 is the python.org installer the Windows platforms install:
// 3.12.10, the last 3.12 release with binary installers, so the pin does
// not go stale under a newer bugfix installer. Its SHA-256 is the one
// python.org's SBOM for the file (python-3.12.10-amd64.exe.spdx.json)
// records.
var python312 = &PythonInstaller{
	Version: "3.12.10",
	URL:     "https://www.python.org/ftp/python/3.12.10/python-3.12.10-amd64.exe",
	SHA256:  "67b5635e80ea51072b87941312d00ec8927c4db9ba18938f7ad2d27b328b95fb",
}

// serviceVerify is what verification must see on a worker started by
// rc.d, launchd or a Scheduled Task (service says how it is enabled).
func serviceVerify(service string) []string {
	return []string{
		"buildbot.tac naming the master, the worker and its password, with keepalive = 60 and delete_leftover_dirs = 1, private to the worker's account",
		"info/admin with the obfuscated contact and info/host",
		service + ", and the worker running after the boot (or started in this boot and refused by a master that runs it as a latent worker)",
	}
}

// windows completes a Windows Server entry: OpenSSH with PowerShell as the
// Administrator (elevated), an RSA key, host keys printed by the launch
// user data, python.org Python and pip, a standard local user and a
// Scheduled Task at startup.
func windows(p Platform) *Platform {
	p.Family, p.Shell = Windows, PowerShell
	p.BaseOwner, p.SSHUser, p.SSHPort, p.KeyType, p.Root, p.HostKeys = "amazon", "Administrator", 22, RSA, Elevated, UserDataConsole
	p.Install, p.Python, p.BuildDeps = Pip, python312, windowsBuildDeps
	p.WorkerUser, p.WorkersDir = "buildbot", `C:\buildbot`
	p.Service, p.ServiceName = ScheduledTask, "buildbot-worker-%s"
	// A Windows image of its 30 GiB and more takes longer than Linux's.
	p.ImageWait = 2 * time.Hour
	p.RebootCheck = "the Component Based Servicing and Windows Update reboot flags, Microsoft.Update.SystemInfo's RebootRequired, and whether another Windows Update round installed anything"
	p.Verify = serviceVerify("the Scheduled Task enabled, starting buildbot-worker at startup as the worker's account")
	p.ProvedBy = ProvedByStatic
	p.Proof = staticProof("that the user data enables OpenSSH and prints its host keys, that EC2 " +
		"launches the image with an RSA key pair, that python.org's installer and pip succeed, that " +
		"Windows Update ends with none pending, that the task starts the worker after a reboot " +
		"and on an instance of the new image, and that the Build Tools bootstrapper (signed by Microsoft) " +
		"and Git for Windows install unattended, so that PCbuild\\build.bat builds CPython")
	return &p
}

var beyondLinux = []*Platform{
	windows(Platform{
		Name: "windows-2022", Title: "Windows Server 2022",
		BaseName: "Windows_Server-2022-English-Full-Base-*",
	}),
	windows(Platform{
		Name: "windows-2025", Aliases: []string{"windows"}, Title: "Windows Server 2025",
		BaseName: "Windows_Server-2025-English-Full-Base-*",
	}),
	{
		Name: "freebsd-14", Aliases: []string{"freebsd"}, Title: "FreeBSD 14",
		Family: FreeBSD, Shell: POSIX, PackageManager: "pkg",
		// The "base UFS" flavour boots with FreeBSD's own ec2 rc scripts
		// (its cloud-init flavour prints host keys another way).
		BaseOwner: "782442783595", BaseName: "FreeBSD 14.*-RELEASE-amd64* base UFS",
		SSHUser: "ec2-user", SSHPort: 22, KeyType: Ed25519, Root: SuRoot, HostKeys: FreeBSDConsole,
		Install: Package, Package: "devel/py-buildbot-worker", BuildDeps: freebsdBuildDeps,
		WorkerUser: "buildbot", WorkersDir: "/var/db/buildbot/workers",
		Service: RCd, ServiceName: "buildbot-worker", ImageWait: linuxImageWait,
		RebootCheck: "freebsd-version -k (the installed kernel) against uname -r (the running one)",
		Verify:      serviceVerify("buildbot_worker_enable and the worker's profile enabled in rc.conf"),
		ProvedBy:    ProvedByStatic,
		Proof: staticProof("the su login to root, the ec2 rc scripts' console format, the package's " +
			"rc.d profile variables, that freebsd-update and pkg upgrade end with the worker " +
			"running after a reboot, and that every name of the build dependencies' list is a package " +
			"of the release's pkg repository"),
	},
	{
		Name: "openbsd", Title: "OpenBSD",
		Family: OpenBSD, Shell: POSIX, PackageManager: "pkg_add",
		// No official AMI: the user names the base image and its login user.
		SSHPort: 22, KeyType: Ed25519, Root: Doas, HostKeys: NoConsole,
		Install: Package, Package: "buildbot-worker", BuildDeps: openbsdBuildDeps,
		WorkerUser: "_buildslave", WorkersDir: "/var/buildslave",
		Service: RCd, ServiceName: "buildbot_worker", ImageWait: linuxImageWait,
		RebootCheck: "syspatch installed patches in this boot (recorded with the boot time by the updates script)",
		Verify:      serviceVerify("buildbot_worker enabled with rcctl and its flags naming the worker's directory"),
		ProvedBy:    ProvedByStatic,
		Proof: staticProof("everything about the image the user names (its login user, doas " +
			"without a password, how its console shows host keys, which are trusted on first use " +
			"here), that syspatch and pkg_add -u end with the worker running after a reboot, and that " +
			"every name of the build dependencies' list is a package of the release"),
	},
	{
		Name: "macos", Title: "macOS (EC2 Mac)",
		Family: MacOS, Shell: POSIX, PackageManager: "softwareupdate",
		BaseOwner: "amazon", BaseName: "amzn-ec2-macos-*",
		SSHUser: "ec2-user", SSHPort: 22, KeyType: Ed25519, Root: Sudo, HostKeys: NoConsole,
		Install: Pip, WorkerUser: "buildbot", WorkerGroup: "staff", WorkersDir: "/Users/buildbot/buildarea",
		BuildDeps: macosBuildDeps,
		Service:   Launchd, ServiceName: "net.buildbot.worker",
		// A mac's root volume is 100 GiB or more.
		ImageWait:   2 * time.Hour,
		RebootCheck: "softwareupdate --list naming an update that requires a restart",
		Verify:      serviceVerify("the LaunchDaemon /Library/LaunchDaemons/net.buildbot.worker.plist loaded"),
		NeedsHost:   true,
		ProvedBy:    ProvedByStatic,
		Proof: staticProof("launching on the named dedicated host, that AMI names match " +
			"amzn-ec2-macos-* for the host's architecture, pip's buildbot-worker under the " +
			"LaunchDaemon, softwareupdate's restart, and that the AMI's command line tools and " +
			"Homebrew (as ec2-user) install the Brewfile's formulas"),
	},
}

func init() { registry = append(append(registry, noSystemd...), beyondLinux...) }
