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

// MasterCfgSnippet returns the generic block for any buildbot master's
// master.cfg (buildbot 3.7 and 4.x take the same EC2LatentWorker
// arguments), for masters that are not CPython's (see WorkerClassChange for
// that one). It returns the errors of b.Validate and renders nothing
// unchecked: every string is a Python literal (pyString).
//
// The block holds no secret and makes the worker in a function:
//   - when the two AWS key files are in b.SecretsDir (by default the
//     directory "secrets" in the master's base directory), an
//     EC2LatentWorker with the handed-off values and max_builds=1. The key
//     is read when master.cfg is loaded, because EC2LatentWorker hands it to
//     boto3 in its constructor, before util.Secret is rendered;
//   - without them (a CI checkconfig, a test master), a plain Worker of the
//     same name: nothing is read and AWS is never called, so checkconfig
//     passes with no secrets and no credentials.
//
// The password is util.Secret(PasswordSecretName), rendered by a
// SecretInAFile provider that the block adds when the directory exists
// (SecretInAFile refuses a missing one). The worker is added to
// c['workers'] (created if missing) and named LATENTWORKER_WORKER_NAME;
// builders are attached to it by that name, in their workernames=.
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

	p("# --- latentworker handoff: EC2 latent worker %s (any master, buildbot 3.7 or 4.x) ---", w)
	p("# The master starts an instance of the worker's AMI in %s for each build", b.Region)
	p("# and terminates it build_wait_timeout seconds after the last one.")
	if b.Changes.OldAMI != "" {
		p("# Changed since the previous bundle: ami= %s -> %s (nothing else).", b.Changes.OldAMI, b.AMI)
	}
	if b.Changes.OldAccessKeyID != "" {
		p("# Changed since the previous bundle: the access key %s -> %s:", b.Changes.OldAccessKeyID, b.AccessKeyID)
		p("# replace the two AWS key files below and reconfigure the master.")
	}
	p("#")
	p("# Secrets: none is written here. The master reads them from files, each")
	p("# mode 0600 and owned by the master's user, in LATENTWORKER_SECRETS_DIR:")
	p("#   %-40s the worker password you gave for %s", PasswordSecretName(w), w)
	p("#   %-40s the access key ID from the bundle", AccessKeyIDSecretName(w))
	p("#   %-40s the secret access key from the bundle", SecretAccessKeySecretName(w))
	p("# Without the two AWS key files (a CI checkconfig, a test master) the worker")
	p("# is a plain Worker of the same name: nothing is read, AWS is not called.")
	p("# password= is util.Secret(), rendered when the master (re)configures by")
	p("# the SecretInAFile provider added below. The AWS key cannot be: buildbot")
	p("# hands it to boto3 in EC2LatentWorker's constructor, so it is read when")
	p("# master.cfg is loaded. After a key rotation, replace those two files and")
	p("# reconfigure.")
	p("#")
	p("# Builders: attach them to the worker by name, in each BuilderConfig that")
	p("# should run on it: workernames=[LATENTWORKER_WORKER_NAME, ...].")
	p("import os")
	p("")
	p("from buildbot.plugins import secrets, util, worker")
	p("")
	if b.SecretsDir == "" {
		p("LATENTWORKER_SECRETS_DIR = os.path.join(basedir, \"secrets\")  # basedir: set by buildbot for master.cfg")
	} else {
		p("LATENTWORKER_SECRETS_DIR = %s", pyString(b.SecretsDir))
	}
	p("LATENTWORKER_WORKER_NAME = %s", pyString(w))
	p("")
	p("")
	p("def _latentworker_worker():")
	p("    \"\"\"The worker: EC2 latent with the AWS key files, else a plain Worker.\"\"\"")
	p("    key_files = [")
	p("        os.path.join(LATENTWORKER_SECRETS_DIR, %s),", pyString(AccessKeyIDSecretName(w)))
	p("        os.path.join(LATENTWORKER_SECRETS_DIR, %s),", pyString(SecretAccessKeySecretName(w)))
	p("    ]")
	p("    password = util.Secret(%s)", pyString(PasswordSecretName(w)))
	props := ""
	if b.ParallelTests > 0 {
		// Builders read it as the fleet's factories read the worker's
		// parallel_tests: make -jN, the tests' -jN.
		props = fmt.Sprintf(", properties={\"parallel_tests\": %d}", b.ParallelTests)
	}
	p("    if not all(os.path.isfile(f) for f in key_files):")
	p("        return worker.Worker(LATENTWORKER_WORKER_NAME, password, max_builds=1%s)", props)
	p("    identifier, secret_identifier = [")
	p("        open(f, encoding=\"utf-8\").read().rstrip(\"\\r\\n\") for f in key_files")
	p("    ]")
	if b.FindNewest {
		pyAccountClass(p, "    ")
	}
	p("    return worker.EC2LatentWorker(")
	p("        name=LATENTWORKER_WORKER_NAME,")
	p("        password=password,")
	if len(b.InstanceTypes) > 1 {
		others := make([]string, len(b.InstanceTypes)-1)
		for i, t := range b.InstanceTypes[1:] {
			others[i] = pyComment(t)
		}
		p("        # The key may also launch: %s.", strings.Join(others, ", "))
	}
	p("        instance_type=%s,", pyString(b.InstanceTypes[0]))
	if b.FindNewest {
		p("        # The newest of the worker's AMIs, found at each launch (today %s):", b.AMI)
		p("        # a refresh needs no change here. The key may launch only images of")
		p("        # this account tagged as the worker's completed bakes.")
		p("        valid_ami_owners=[_AccountID(%s)],", pyString(b.AMIOwner))
		p("        valid_ami_location_regex=%s,", pyString(b.AMILocationRegex))
	} else {
		p("        ami=%s,  # after a refresh, only this value changes", pyString(b.AMI))
	}
	p("        region=%s,", pyString(b.Region))
	p("        identifier=identifier,")
	p("        secret_identifier=secret_identifier,")
	p("        # The key may launch only with this key pair, security group, subnet")
	p("        # and instance profile, and terminate only instances with that profile.")
	p("        keypair_name=%s,", pyString(b.KeyPairName))
	p("        security_group_ids=[%s],", pyString(b.SecurityGroupID))
	p("        subnet_id=%s,", pyString(b.SubnetID))
	p("        instance_profile_name=%s,", pyString(b.InstanceProfileName))
	p("        # The key may tag instances with exactly these tags: keep them as they are.")
	if len(b.Tags) == 0 {
		p("        tags={},")
	} else {
		p("        tags={")
		for _, k := range slices.Sorted(maps.Keys(b.Tags)) {
			p("            %s: %s,", pyString(k), pyString(b.Tags[k]))
		}
		p("        },")
	}
	p("        keepalive_interval=%d,  # seconds, as the worker in the AMI was created with", b.keepalive())
	p("        # Seconds an idle instance waits for the next build before the master")
	p("        # terminates it: long enough to reuse it for queued builds, short")
	p("        # enough not to pay for idle hours.")
	p("        build_wait_timeout=%d,", b.buildWait())
	p("        max_builds=1,  # one build at a time on an instance")
	if b.ParallelTests > 0 {
		p("        # The instance type's vCPUs, for the builders' make -jN and tests -jN")
		p("        # (util.Property(\"parallel_tests\")), as CPython's workers declare it.")
		p("        properties={\"parallel_tests\": %d},", b.ParallelTests)
	}
	p("    )")
	p("")
	p("")
	p("if os.path.isdir(LATENTWORKER_SECRETS_DIR):")
	p("    c.setdefault(\"secretsProviders\", []).append(secrets.SecretInAFile(dirname=LATENTWORKER_SECRETS_DIR))")
	p("c.setdefault(\"workers\", []).append(_latentworker_worker())")
	p("# --- end of latentworker handoff: %s ---", w)
	return sb.String(), nil
}

// pyAccountClass writes, at indent, the class that gives EC2LatentWorker an
// account ID as it wants one: an int (its constructor refuses anything
// else), whose str() (what it hands boto3's Owners filter) keeps all 12
// digits. An account ID may start with 0, which an int literal would drop
// (and a Python one refuse: 0123... is a syntax error).
func pyAccountClass(p func(string, ...any), indent string) {
	p(indent + "class _AccountID(int):")
	p(indent + "    \"\"\"An AWS account ID: an int whose str() keeps its 12 digits.\"\"\"")
	p("")
	p(indent + "    def __str__(self):")
	p(indent + "        return \"%%012d\" %% int(self)")
	p("")
	p(indent + "    __repr__ = __str__")
	p("")
}
