package handoff

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The CPython path. CPython's buildmaster keeps its private values in a
// settings.yaml (not in its public repository) under workers.NAME, builds
// each worker with its own worker class from those settings, attaches
// builders to workers by name, and runs `buildbot checkconfig` in CI with
// no settings file, no secrets and no AWS credentials. What the admins get:
//
//   - SettingsFragment: the worker's private settings (password, the key,
//     the EC2 values) for settings.yaml, in the 0600 file only;
//   - WorkerClassChange: the public change to the worker class, which builds
//     an EC2LatentWorker when the worker's settings have an "ec2" section
//     and a plain Worker otherwise (so checkconfig with default settings
//     reads no secret and calls no AWS), and the requirement it adds.

// EC2SettingsKey is the section of a worker's settings that makes it an EC2
// latent worker.
const EC2SettingsKey = "ec2"

// Requirement is what the worker-class change adds to the master's
// requirements: EC2LatentWorker imports boto3, which buildbot does not
// require.
const Requirement = "boto3"

// yamlString returns s as a YAML double-quoted scalar. A JSON string is
// one (YAML 1.2 double-quoted scalars take JSON's escapes), and json
// escapes every control character, so no value can end the scalar or the
// line.
func yamlString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("encode string: %v", err)) // a string always encodes
	}
	return string(b)
}

// SettingsFragment returns the worker's private settings for the master's
// settings.yaml: under workers.NAME, the worker password and an "ec2"
// section with the access key ID and secret, instance type, region, AMI,
// key pair, security group, subnet, instance profile, tags, keepalive and
// build_wait_timeout. It holds secrets: write it only to a 0600 file, or
// print it when the owner asked (--show-secret). A zero Password or
// SecretAccessKey (a refresh that kept the key) is left out with a comment
// saying to keep the value the admins have. It returns the errors of
// b.Validate.
func SettingsFragment(b Bundle) (string, error) {
	if err := b.Validate(); err != nil {
		return "", fmt.Errorf("settings fragment: %w", err)
	}
	var sb strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	w := b.WorkerName
	p("# latentworker handoff: private settings of the EC2 latent worker %s.", w)
	p("# Merge into the master's settings.yaml (workers: is a mapping by worker")
	p("# name). SECRET: the worker password and the AWS secret access key.")
	if b.Changes.OldAMI != "" {
		p("# Changed since the previous bundle: ami %s -> %s.", b.Changes.OldAMI, b.AMI)
	}
	if b.Changes.OldAccessKeyID != "" {
		p("# Changed since the previous bundle: the access key %s -> %s.", b.Changes.OldAccessKeyID, b.AccessKeyID)
	}
	p("workers:")
	p("  %s:", yamlString(w))
	if b.Password.IsZero() {
		p("    # password: unchanged, keep the one you have")
	} else {
		p("    password: %s", yamlString(b.Password.Reveal()))
	}
	p("    %s:", EC2SettingsKey)
	p("      region: %s", yamlString(b.Region))
	if b.FindNewest {
		p("      # ami: none; the master finds the worker's newest AMI (today %s).", b.AMI)
		p("      valid_ami_owners: [%s]", yamlString(b.AMIOwner))
		p("      valid_ami_location_regex: %s", yamlString(b.AMILocationRegex))
	} else {
		p("      ami: %s", yamlString(b.AMI))
	}
	p("      instance_type: %s", yamlString(b.InstanceTypes[0]))
	if len(b.InstanceTypes) > 1 {
		p("      # The key may also launch: %s.", strings.Join(b.InstanceTypes[1:], ", "))
	}
	p("      access_key_id: %s", yamlString(b.AccessKeyID))
	if b.SecretAccessKey.IsZero() {
		p("      # secret_access_key: unchanged, keep the one you have")
	} else {
		p("      secret_access_key: %s", yamlString(b.SecretAccessKey.Reveal()))
	}
	p("      # The key may launch only with these, and tag with exactly these tags.")
	p("      keypair_name: %s", yamlString(b.KeyPairName))
	p("      security_group_ids: [%s]", yamlString(b.SecurityGroupID))
	p("      subnet_id: %s", yamlString(b.SubnetID))
	p("      instance_profile_name: %s", yamlString(b.InstanceProfileName))
	if len(b.Tags) == 0 {
		p("      tags: {}")
	} else {
		p("      tags:")
		for _, k := range slices.Sorted(maps.Keys(b.Tags)) {
			p("        %s: %s", yamlString(k), yamlString(b.Tags[k]))
		}
	}
	p("      keepalive_interval: %d", b.keepalive())
	p("      build_wait_timeout: %d", b.buildWait())
	return sb.String(), nil
}

// WorkerClassChange returns the public part for a CPython-shaped master:
// the change to its worker class, as a small block to review, and the
// requirement it adds. It holds no value of the worker: every value comes
// from the worker's settings (SettingsFragment), so the one change serves
// every EC2 worker and the public repository holds no secret.
//
// The master's worker class builds each worker from settings.workers[NAME]
// (the worker password among them) with buildbot's Worker. The change
// builds an EC2LatentWorker instead when those settings have an "ec2"
// section; without one (no settings file, as in CI's checkconfig) nothing
// changes: no secret is read, no AWS call is made, boto3 is not imported.
// The worker keeps its name, so the builders attached to it by name run
// on the EC2 instances.
func WorkerClassChange(b Bundle) (string, error) {
	if err := b.Validate(); err != nil {
		return "", fmt.Errorf("worker class change: %w", err)
	}
	var sb strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	p("# --- latentworker handoff: the worker class change (public, once for every EC2 worker) ---")
	p("# 1. requirements: add %s (EC2LatentWorker imports it; buildbot does not require it).", Requirement)
	p("#")
	p("# 2. The worker module (where the worker class builds buildbot's Worker from")
	p("#    settings.workers[name]): add this function at module level.")
	p("")
	p("")
	p("def ec2_latent_worker(name, password, ec2, **kwargs):")
	p("    \"\"\"An EC2LatentWorker from a worker's %q settings (settings.yaml).", EC2SettingsKey)
	p("")
	p("    Called only when those settings exist: without them (CI's checkconfig)")
	p("    nothing here runs, so no secret is read and AWS is never called.")
	p("    \"\"\"")
	p("    from buildbot.plugins import worker as _bb_worker")
	p("")
	p("    kwargs.setdefault(\"keepalive_interval\", int(ec2.get(\"keepalive_interval\", %d)))", DefaultKeepaliveInterval)
	p("    kwargs.setdefault(\"build_wait_timeout\", int(ec2.get(\"build_wait_timeout\", %d)))", int(DefaultBuildWaitTimeout.Seconds()))
	p("    if \"ami\" in ec2:")
	p("        kwargs[\"ami\"] = str(ec2[\"ami\"])")
	p("    else:  # the newest of the worker's AMIs, found by the master at each launch")
	pyAccountClass(p, "        ")
	p("        kwargs[\"valid_ami_owners\"] = [_AccountID(str(o)) for o in ec2[\"valid_ami_owners\"]]")
	p("        kwargs[\"valid_ami_location_regex\"] = str(ec2[\"valid_ami_location_regex\"])")
	p("    return _bb_worker.EC2LatentWorker(")
	p("        name,")
	p("        password,")
	p("        instance_type=str(ec2[\"instance_type\"]),")
	p("        region=str(ec2[\"region\"]),")
	p("        identifier=str(ec2[\"access_key_id\"]),")
	p("        secret_identifier=str(ec2[\"secret_access_key\"]),")
	p("        keypair_name=str(ec2[\"keypair_name\"]),")
	p("        security_group_ids=[str(g) for g in ec2[\"security_group_ids\"]],")
	p("        subnet_id=str(ec2[\"subnet_id\"]),")
	p("        instance_profile_name=str(ec2[\"instance_profile_name\"]),")
	p("        # The key may tag instances with exactly these tags.")
	p("        tags={str(k): str(v) for k, v in dict(ec2[\"tags\"]).items()},")
	p("        **kwargs,")
	p("    )")
	p("")
	p("")
	p("# 3. In the worker class, where it makes the plain Worker, e.g.")
	p("#        self.bb_worker = _worker.Worker(name, str(pw), ..., max_builds=...)")
	p("#    make the EC2 one when the worker's settings have an %q section:", EC2SettingsKey)
	p("#")
	p("#        ec2 = worker_settings.get(%q, None)", EC2SettingsKey)
	p("#        if ec2:")
	p("#            self.bb_worker = ec2_latent_worker(")
	p("#                name, str(pw), ec2, max_builds=1,")
	p("#                notify_on_missing=emails,  # whatever the plain Worker gets")
	p("#            )")
	p("#        else:")
	p("#            self.bb_worker = _worker.Worker(...)  # as before")
	p("#")
	p("#    max_builds=1: one build at a time per instance. The worker keeps its")
	p("#    name (%s), so its builders, attached by name, run on EC2.", b.WorkerName)
	p("# --- end of the worker class change ---")
	return sb.String(), nil
}
