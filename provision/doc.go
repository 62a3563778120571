// Package provision reaches a machine and runs the provisioning scripts on
// it.
//
// It owns three things:
//
//   - host-key trust: ParseConsoleHostKeys reads the SSH host keys that
//     cloud-init prints on the EC2 console, HostKeys.Check pins a
//     connection to them, and TrustOnFirstUse is the warned fallback for an
//     instance whose console shows none;
//   - SSH: Dial connects with retries while an instance boots (never
//     retrying a host-key mismatch, and an authentication failure only a
//     few times), Client runs commands with stdin, uploads files without
//     SFTP and reads the boot ID, and Reboot reboots and waits for a new
//     boot ID;
//   - Driver, which uploads a platform's rendered script from package
//     scripts, runs it as root with the worker password on stdin, streams
//     its progress and removes it again.
//
// Secrets travel only on stdin: never in a command string, so never in the
// argv of any process, local or remote, and never in an error message.
//
// The package does not create or look up AWS resources: the caller (package
// bake) launches the instance, fetches its console output and passes it in.
// It does not decide when a script runs or what a failure means for the
// bake; that is the caller's job too.
package provision
