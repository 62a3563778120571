// Package scripts holds the embedded provisioning scripts that turn a
// Debian or Ubuntu instance into a buildbot latent worker, and renders them.
//
// Each exported function returns a complete POSIX sh script that the
// provisioning driver uploads and runs as root ("sudo sh FILE"): Setup
// installs buildbot-worker and creates or refreshes the worker, Verify
// reports what is on the machine (parsed with ParseFacts and judged with
// Facts.Check), Updates applies package updates, RebootRequired answers
// through its exit status, Generalize prepares the disk for imaging, and
// BuildDeps installs CPython's build dependencies.
//
// The package owns the scripts' content and the validation and quoting of
// every value rendered into them: a value is checked by Worker.Validate (or
// the function that takes it) and then single-quoted for the shell, so no
// input can change a script's meaning. Secrets are never rendered: Setup and
// Verify read the worker password from the first line of their stdin.
//
// It does not decide when or whether a script runs, how it reaches the
// instance, or what to do with a failure: that is the caller's (package
// provision). Rendering is pure and deterministic.
package scripts
