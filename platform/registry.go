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

var registry = []*Platform{
	debianPackage(Platform{
		Name: "debian-12", Aliases: []string{"debian"}, Title: "Debian 12 (bookworm)",
		BaseOwner: "136693071363", BaseName: "debian-12-amd64-*", SSHUser: "admin",
		ProvedBy: ProvedByLab, Proof: labProof("Debian 12", "3.7"),
	}),
	debianPackage(Platform{
		Name: "debian-13", Title: "Debian 13 (trixie)",
		BaseOwner: "136693071363", BaseName: "debian-13-amd64-*", SSHUser: "admin",
		ProvedBy: ProvedByLab, Proof: labProof("Debian 13", "4.2"),
	}),
	debianPackage(Platform{
		Name: "ubuntu-24.04", Aliases: []string{"ubuntu"}, Title: "Ubuntu 24.04 LTS (noble)", Repos: []string{"universe"},
		BaseOwner: "099720109477", BaseName: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", SSHUser: "ubuntu",
		ProvedBy: ProvedByLab, Proof: labProof("Ubuntu 24.04", "3.10 (universe)"),
	}),
}
