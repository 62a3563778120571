// Package handoff owns the bundle latentworker gives the buildmaster
// admins so that their master can run the worker as an EC2 latent worker:
// the Bundle itself and its renderings (an email-ready text with the
// guide's four items first, JSON, and a paste-ready EC2LatentWorker(...)
// snippet for master.cfg), the 0600 file that holds the full bundle with
// the secret access key, and its encryption to an age recipient or an SSH
// public key (filippo.io/age) so that it can be mailed.
//
// It does not create the IAM user, its policy, its access keys or its
// instance profile (package iam does), nor the key pair and security group
// the master names (the handoff command does); it makes no AWS call. It
// renders what it is given, after checking every value: nothing it renders
// into Python is taken verbatim, every string is a Python literal built by
// pyString, and names used as secret file names are checked to be buildbot
// identifiers.
//
// # The secret
//
// The secret access key is a config.Secret. It is written only by
// WriteSecretFile (mode 0600), by JSON with showSecret and by Text with
// TextOptions.ShowSecret; every other output names the file instead. AWS
// returns a secret only when the key is created: after a refresh that keeps
// the key, the bundle has no secret, and the renderings say that the
// admins' secret is unchanged.
//
// # The master.cfg snippet
//
// The snippet names no secret. The worker password goes through buildbot's
// own secret lookup, util.Secret, which the master renders when it
// (re)configures. EC2LatentWorker hands identifier= and secret_identifier=
// to boto3 in its constructor, before any secret is rendered, so util.Secret
// cannot be used there: the snippet reads those two values from files in
// the same directory when master.cfg is loaded. See MasterCfgSnippet.
package handoff
