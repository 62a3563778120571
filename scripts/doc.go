// Package scripts holds the embedded provisioning scripts that turn an
// instance of a registry platform (package platform) into a buildbot latent
// worker, and renders them: POSIX sh for Linux (linux/, a fragment per
// package manager) and for FreeBSD, OpenBSD and macOS (unix/, a fragment
// per operating system), PowerShell for Windows (windows/), whose launch
// user data (UserData) it renders too.
//
// Each exported function returns a complete script that the provisioning
// driver uploads and runs as root (sudo, doas or su with "sh FILE";
// "powershell.exe -File FILE" as the Administrator): Setup
// installs buildbot-worker and creates or refreshes the worker, Verify
// reports what is on the machine (parsed with ParseFacts and judged with
// Facts.Check), Updates applies package updates, RebootRequired answers
// through its exit status, Generalize prepares the disk for imaging, and
// BuildDeps installs CPython's build dependencies.
//
// The package owns the scripts' content and the validation and quoting of
// every value rendered into them: a value is checked by Worker.Validate (or
// the function that takes it) and then single-quoted for the shell ("sh")
// or for PowerShell ("ps"), so no input can change a script's meaning. Secrets are never rendered: Setup and
// Verify read the worker password from the first line of their stdin.
//
// It does not decide when or whether a script runs, how it reaches the
// instance, or what to do with a failure: that is the caller's (package
// provision). Rendering is pure and deterministic.
package scripts
