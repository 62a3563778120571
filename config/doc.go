// Package config owns latentworker's one configuration file: its TOML
// format, the defaults, the LATENTWORKER_* environment overrides, the keys the
// command line may override, the commented starter that "latentworker init"
// writes, and validation whose every error names the offending key (such as
// "aws.instance_type") and what it allows.
//
// A configuration is built in layers, each overriding the one before:
// Default, then the file (Load), then the environment (ApplyEnv), then flags
// (Set). Validate checks the result; it reports every problem at once.
// Keys lists every key with its environment variable, flag, default and
// help, so that flags, environment and documentation come from one table.
//
// The worker password is never part of a Config: it comes from an
// environment variable, a 0600 file or an interactive prompt (Password), and
// travels as a Secret, which prints as "(redacted)". A "password" key in the
// file, or a flag carrying a password value, is refused.
//
// The package never talks to AWS or to a network: the region, the base AMI
// and the instance type are checked for syntax only (their existence is
// checked by "latentworker validate" through package bake), the SDK resolves
// an empty region, and the caller's public address for aws.ssh_cidr is
// looked up by the caller. The rules for the worker's own fields (name,
// master, admin, host info) are those of package scripts, which renders them.
package config
