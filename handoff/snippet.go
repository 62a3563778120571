package handoff

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// pyString returns s as a Python 3 string literal in double quotes that
// is pure printable ASCII: quotes and backslashes are escaped, and every
// other character outside 0x20-0x7e is written as \xXX, \uXXXX or
// \UXXXXXXXX. Whatever s holds, the literal evaluates to s and nothing
// else, so no value can end the string, the line or the call it is in.
func pyString(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r >= 0x20 && r <= 0x7e:
			sb.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&sb, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			fmt.Fprintf(&sb, `\U%08x`, r)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// pyComment returns s for a # comment: s itself if it is printable ASCII,
// else its Python literal, so that a comment never spans two lines.
func pyComment(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		return pyString(s)
	}
	return s
}

// MasterCfgSnippet returns a paste-ready block for master.cfg that defines
// the worker as buildbot 3.7's EC2LatentWorker and appends it to
// c['workers'] (c being the BuildmasterConfig dict, as in buildbot's
// sample). It returns the errors of b.Validate and renders nothing
// unchecked: every string is a Python literal (pyString).
//
// The snippet holds no secret. It reads three files, mode 0600, from
// b.SecretsDir (by default the directory "secrets" in the master's base
// directory): PasswordSecretName, AccessKeyIDSecretName and
// SecretAccessKeySecretName of the worker name. The password is
// util.Secret(...), which needs c['secretsProviders'] to include
// secrets.SecretInAFile(dirname=LATENTWORKER_SECRETS_DIR) (secrets from
// buildbot.plugins); the access key is read when master.cfg is loaded, because EC2LatentWorker passes it to
// boto3 in its constructor, before secrets are rendered. The comments in
// the snippet say so for the admins.
//
// The tags= dict is exactly b.Tags, which must be the policy's Tags.
// Only the first instance type is used; the others are named in a
// comment. After a refresh (b.Changes), the header says which value
// changed.
func MasterCfgSnippet(b Bundle) (string, error) {
	if err := b.Validate(); err != nil {
		return "", fmt.Errorf("master.cfg snippet: %w", err)
	}
	var sb strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	w := b.WorkerName

	p("# --- latentworker handoff: EC2 latent worker %s ---", w)
	p("# Buildbot 3.7 EC2LatentWorker for the worker %s, in %s.", w, b.Region)
	p("# The master starts an instance of the worker's AMI for each build and")
	p("# terminates it build_wait_timeout seconds after the last one.")
	if b.Changes.OldAMI != "" {
		p("# Changed since the previous bundle: ami= %s -> %s (nothing else).", b.Changes.OldAMI, b.AMI)
	}
	if b.Changes.OldAccessKeyID != "" {
		p("# Changed since the previous bundle: the access key %s -> %s:", b.Changes.OldAccessKeyID, b.AccessKeyID)
		p("# replace the two AWS key files below and reconfigure the master.")
	}
	p("#")
	p("# Secrets: none is written here. The master reads three files, each mode")
	p("# 0600 and owned by the master's user, from LATENTWORKER_SECRETS_DIR:")
	p("#   %-40s the worker password you gave for %s", PasswordSecretName(w), w)
	p("#   %-40s the access key ID from the bundle", AccessKeyIDSecretName(w))
	p("#   %-40s the secret access key from the bundle", SecretAccessKeySecretName(w))
	p("# password= goes through buildbot's secret lookup: util.Secret() is")
	p("# rendered when the master (re)configures, by c['secretsProviders'],")
	p("# which must include a provider for that directory, for example:")
	p("#   from buildbot.plugins import secrets")
	p("#   c['secretsProviders'] = [secrets.SecretInAFile(dirname=LATENTWORKER_SECRETS_DIR)]")
	p("# identifier= and secret_identifier= cannot be util.Secret():")
	p("# EC2LatentWorker hands them to boto3 in its constructor, before secrets")
	p("# are rendered, so _latentworker_secret() reads them when master.cfg is")
	p("# loaded. After a key rotation, replace those two files and reconfigure.")
	p("import os")
	p("")
	p("from buildbot.plugins import util, worker")
	p("")
	if b.SecretsDir == "" {
		p("LATENTWORKER_SECRETS_DIR = os.path.join(basedir, \"secrets\")  # basedir: set by buildbot for master.cfg")
	} else {
		p("LATENTWORKER_SECRETS_DIR = %s", pyString(b.SecretsDir))
	}
	p("")
	p("")
	p("def _latentworker_secret(name):")
	p("    \"\"\"Return the secret in LATENTWORKER_SECRETS_DIR/name, without its final newline.\"\"\"")
	p("    with open(os.path.join(LATENTWORKER_SECRETS_DIR, name), encoding=\"utf-8\") as f:")
	p("        return f.read().rstrip(\"\\r\\n\")")
	p("")
	p("")
	p("c['workers'].append(worker.EC2LatentWorker(")
	p("    name=%s,", pyString(w))
	p("    password=util.Secret(%s),", pyString(PasswordSecretName(w)))
	if len(b.InstanceTypes) > 1 {
		others := make([]string, len(b.InstanceTypes)-1)
		for i, t := range b.InstanceTypes[1:] {
			others[i] = pyComment(t)
		}
		p("    # The key may also launch: %s.", strings.Join(others, ", "))
	}
	p("    instance_type=%s,", pyString(b.InstanceTypes[0]))
	p("    ami=%s,  # after a refresh, only this value changes", pyString(b.AMI))
	p("    region=%s,", pyString(b.Region))
	p("    identifier=_latentworker_secret(%s),", pyString(AccessKeyIDSecretName(w)))
	p("    secret_identifier=_latentworker_secret(%s),", pyString(SecretAccessKeySecretName(w)))
	p("    # The key may launch only with this key pair, security group, subnet")
	p("    # and instance profile, and terminate only instances with that profile.")
	p("    keypair_name=%s,", pyString(b.KeyPairName))
	p("    security_group_ids=[%s],", pyString(b.SecurityGroupID))
	p("    subnet_id=%s,", pyString(b.SubnetID))
	p("    instance_profile_name=%s,", pyString(b.InstanceProfileName))
	p("    # The key may tag instances with exactly these tags: keep them as they are.")
	if len(b.Tags) == 0 {
		p("    tags={},")
	} else {
		p("    tags={")
		for _, k := range slices.Sorted(maps.Keys(b.Tags)) {
			p("        %s: %s,", pyString(k), pyString(b.Tags[k]))
		}
		p("    },")
	}
	p("    keepalive_interval=%d,  # seconds, as the worker in the AMI was created with", b.keepalive())
	p("    # Seconds an idle instance waits for the next build before the master")
	p("    # terminates it: long enough to reuse it for queued builds, short")
	p("    # enough not to pay for idle hours.")
	p("    build_wait_timeout=%d,", b.buildWait())
	p("))")
	p("# --- end of latentworker handoff: %s ---", w)
	return sb.String(), nil
}
