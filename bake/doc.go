// Package bake owns the bake pipeline: the ordered steps that turn a base AMI
// into a verified buildbot latent-worker AMI, the typed run state they share,
// the undo stack that removes what a run created, and the manifest.
//
// Steps lists the pipeline in order, in one place. Each step is a function of
// (ctx, *State); each AWS create pushes its undo onto the run's stack the
// moment AWS returns the new ID. When Run returns, the stack unwinds in
// reverse on a detached, bounded context: temporary resources (key pair,
// security group, throwaway instances) are always removed, the builder is
// left stopped unless Options.TerminateBuilder, and the image with its
// snapshots is rolled back only when the run failed or was cancelled.
// Undo continues past failures; what it could not remove is reported as a
// *LeftoverError naming every resource ID and the command that removes it.
//
// Secrets (the worker password and the temporary private key) never reach
// events, errors, the manifest or any process's argv: the password travels
// to the instance only on a script's stdin (package provision), and the
// private key exists only in memory as an ssh.Signer.
//
// Files follow the pipeline's phases: steps.go (the order), preflight.go,
// temporaries.go (key pair, security group), instances.go (launch, wait,
// connect, stop), worker.go (provision, updates and reboots, verification,
// generalization), image.go (create, wait, verify by booting it).
//
// The package does not parse flags, print, or build a single shell
// command: it asks the platform (package platform) for its key type, login
// user, port and host-key source, and the platform's driver (package
// provision) for everything that runs on an instance. The CLI renders
// Events; package fleet names and tags.
package bake
