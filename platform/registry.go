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
		"left to prove on AWS: dnf, the repositories, SELinux enforcing and the real AMI"
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
		ProvedBy: ProvedByLab, Proof: labProof("Debian 12", "3.7") +
			"; with image.install = \"pip\" it is baked the same way with buildbot-worker from PyPI in a venv, the guide's user, directory and unit, and refreshed (Setup a second time)",
	}),
	debianPackage(Platform{
		Name: "debian-13", Title: "Debian 13 (trixie)",
		BaseOwner: "136693071363", BaseName: "debian-13-amd64-*", SSHUser: "admin",
		ProvedBy: ProvedByLab, Proof: labProof("Debian 13", "4.2"),
	}),
	debianPackage(Platform{
		Name: "ubuntu-22.04", Title: "Ubuntu 22.04 LTS (jammy)", Repos: []string{"universe"},
		BaseOwner: "099720109477", BaseName: "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*", SSHUser: "ubuntu",
		ProvedBy: ProvedByLab, Proof: labProof("Ubuntu 22.04", "3.4 (universe)"),
	}),
	debianPackage(Platform{
		Name: "ubuntu-24.04", Aliases: []string{"ubuntu"}, Title: "Ubuntu 24.04 LTS (noble)", Repos: []string{"universe"},
		BaseOwner: "099720109477", BaseName: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", SSHUser: "ubuntu",
		ProvedBy: ProvedByLab, Proof: labProof("Ubuntu 24.04", "3.10 (universe)"),
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
		Proof: rpmProof(""),
	}),
	rpmPackage(Platform{
		Name: "rhel-8", Title: "Red Hat Enterprise Linux 8", Repos: []string{"codeready-builder-for-rhel-8-rhui-rpms", "epel"},
		BaseOwner: "309956199498", BaseName: "RHEL-8.*_HVM-*-x86_64-*-Hourly2-GP3", SSHUser: "ec2-user",
		Proof: rpmProof(", CodeReady Linux Builder from RHUI, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "rhel-9", Title: "Red Hat Enterprise Linux 9", Repos: []string{"codeready-builder-for-rhel-9-rhui-rpms", "epel"},
		BaseOwner: "309956199498", BaseName: "RHEL-9.*_HVM-*-x86_64-*-Hourly2-GP3", SSHUser: "ec2-user",
		Proof: rpmProof(", CodeReady Linux Builder from RHUI, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "centos-stream-9", Title: "CentOS Stream 9", Repos: []string{"crb", "epel", "epel-next"},
		BaseOwner: "125523088429", BaseName: "CentOS Stream 9 x86_64 *", SSHUser: "ec2-user",
		Proof: rpmProof(", CRB, EPEL, EPEL Next"),
	}),
	rpmPackage(Platform{
		// EPEL 10 has no EPEL Next: its minor releases follow Stream.
		Name: "centos-stream-10", Title: "CentOS Stream 10", Repos: []string{"crb", "epel"},
		BaseOwner: "125523088429", BaseName: "CentOS Stream 10 x86_64 *", SSHUser: "ec2-user",
		Proof: rpmProof(", CRB, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "almalinux-9", Title: "AlmaLinux OS 9", Repos: []string{"crb", "epel"},
		BaseOwner: "764336703387", BaseName: "AlmaLinux OS 9.* x86_64", SSHUser: "ec2-user",
		Proof: rpmProof(", CRB, EPEL"),
	}),
	rpmPackage(Platform{
		Name: "rocky-9", Title: "Rocky Linux 9", Repos: []string{"crb", "epel"},
		BaseOwner: "792107900819", BaseName: "Rocky-9-EC2-Base-9.*.x86_64", SSHUser: "rocky",
		Proof: rpmProof(", CRB, EPEL"),
	}),
	func() *Platform {
		// No buildbot-worker package (and no EPEL): the guide's pip path.
		p := rpmPackage(Platform{
			Name: "amazonlinux-2023", Aliases: []string{"al2023"}, Title: "Amazon Linux 2023",
			BaseOwner: "amazon", BaseName: "al2023-ami-2023.*-x86_64", SSHUser: "ec2-user",
			Proof: "static: no Amazon Linux repository or image is reachable here, so its dnf half (python3-pip, dnf upgrade, needs-restarting) is only golden-tested and shellchecked, " +
				"while its pip half (a venv in /opt/buildbot-worker, pip install buildbot-worker, the system user, /var/lib/buildbot/worker, the guide's unit) " +
				"is the same script the lab bakes for real on Debian 12 with image.install = \"pip\": PyPI, a reboot, a worker that connects to a real master from the new image; " +
				"left to prove on AWS: AL2023's dnf and Python with the newest buildbot-worker",
		}).WithPip()
		return p
	}(),
}
