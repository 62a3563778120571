package handoff

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/field"
)

// Defaults the fleet uses.
const (
	// DefaultKeepaliveInterval is the worker's keepalive in seconds, as
	// the fleet's workers are created with (create-worker --keepalive=60).
	DefaultKeepaliveInterval = 60
	// DefaultBuildWaitTimeout is how long the master keeps an idle
	// instance for the next build before terminating it: buildbot's own
	// default, long enough for the next build of a busy branch to reuse
	// the instance, short enough not to pay for idle hours.
	DefaultBuildWaitTimeout = 10 * time.Minute
)

// Bundle is what the buildmaster admins need to run the worker as an EC2
// latent worker. The zero values of the optional fields are documented on
// each field.
type Bundle struct {
	// WorkerName is the buildbot worker name the admins gave (required).
	WorkerName string
	// MasterAddress is the host:port the worker connects to, as baked
	// into the AMI (required).
	MasterAddress string

	// InstanceTypes are the instance types the key may launch, the one
	// to use first (required). EC2LatentWorker takes one type: the
	// snippet uses InstanceTypes[0] and names the others in a comment.
	InstanceTypes []string
	// Region is the full region name, e.g. "eu-west-1" (required).
	Region string
	// AMI is the worker's image (required).
	AMI string
	// FindNewest hands off no fixed AMI: the master finds the worker's
	// newest AMI by itself, at each launch (EC2LatentWorker's
	// valid_ami_owners=[AMIOwner] and valid_ami_location_regex=
	// AMILocationRegex, whose group is the name's date, so the newest
	// sorts last), and the key may launch any completed image of the
	// worker (iam.PolicyOptions.FindNewest). A refresh then needs no admin.
	// AMI is the one the master finds today.
	FindNewest       bool
	AMIOwner         string
	AMILocationRegex string
	// ReplacesAMI is the worker's previous image, the one AMI replaces
	// ("" for none). It is informational; Changes says what the admins
	// must swap.
	ReplacesAMI string

	// AccessKeyID and SecretAccessKey are the IAM user's key. AccessKeyID
	// is required; SecretAccessKey is zero when the key is reused (AWS
	// shows a secret only once) and the admins keep the one they have.
	AccessKeyID     string
	SecretAccessKey config.Secret

	// Password is the worker password, for the private settings
	// (SettingsFragment); zero when the owner did not give it, and the
	// admins keep the one they have.
	Password config.Secret

	// KeyPairName, SecurityGroupID, SubnetID and InstanceProfileName are
	// what the master must name (keypair_name=, security_group_ids=,
	// subnet_id=, instance_profile_name=): the key's policy allows
	// launches only with them (all required).
	KeyPairName         string
	SecurityGroupID     string
	SubnetID            string
	InstanceProfileName string
	// Tags are the tags the master puts on each instance (tags=). They
	// must be exactly iam.PolicyOptions.Tags: the policy lets the key set
	// these keys to these values and nothing else.
	Tags map[string]string

	// KeepaliveInterval is the keepalive in seconds; 0 means
	// DefaultKeepaliveInterval.
	KeepaliveInterval int
	// BuildWaitTimeout is build_wait_timeout= in whole seconds; 0 means
	// DefaultBuildWaitTimeout.
	BuildWaitTimeout time.Duration

	// ParallelTests is the worker's parallelism as the fleet's worker
	// declarations take it (CPythonWorker(..., parallel_tests=N): make -jN
	// and the tests' -jN): the vCPUs of InstanceTypes[0]; 0 when unknown.
	// An EC2 worker runs one build at a time (ParallelBuilders).
	ParallelTests int

	// SecretsDir is the directory on the master that holds the secret
	// files the snippet reads (see MasterCfgSnippet); "" means the
	// directory "secrets" in the master's base directory.
	SecretsDir string

	// Changes are what changed since the bundle the admins have; zero for
	// a first handoff.
	Changes Changes
}

// Changes are what changed since the previous bundle, so that the admins
// swap only those values.
type Changes struct {
	// OldAMI is the image the master runs now, replaced by Bundle.AMI;
	// "" when the image did not change.
	OldAMI string
	// OldAccessKeyID is the key that Bundle.AccessKeyID replaces; "" when
	// the key was not rotated. The old key stays active until the owner
	// retires it, once the admins have switched.
	OldAccessKeyID string
}

// IsZero reports whether nothing changed.
func (c Changes) IsZero() bool { return c == Changes{} }

// ParallelBuilders is parallel_builders (the worker's max_builds) of
// every EC2 worker: an instance runs one build at a time, so a build has
// all its vCPUs.
const ParallelBuilders = 1

// parallelism says, for the admins, how the worker is declared on
// CPython's master (the fleet's worker declarations).
func (b Bundle) parallelism() string {
	if b.ParallelTests == 0 {
		return fmt.Sprintf("parallel_builders=%d; parallel_tests unknown (EC2 did not give %s's vCPUs)", ParallelBuilders, b.InstanceTypes[0])
	}
	return fmt.Sprintf("parallel_tests=%d, parallel_builders=%d: %s's %d vCPUs for make -j%d and the tests' -j%d, one build at a time "+
		"(CPython's master: cpw(name=%q, ..., parallel_tests=%d) in get_workers)",
		b.ParallelTests, ParallelBuilders, b.InstanceTypes[0], b.ParallelTests, b.ParallelTests, b.ParallelTests, b.WorkerName, b.ParallelTests)
}

// keepalive returns the keepalive interval in seconds.
func (b Bundle) keepalive() int {
	if b.KeepaliveInterval == 0 {
		return DefaultKeepaliveInterval
	}
	return b.KeepaliveInterval
}

// buildWait returns build_wait_timeout in seconds.
func (b Bundle) buildWait() int {
	if b.BuildWaitTimeout == 0 {
		return int(DefaultBuildWaitTimeout / time.Second)
	}
	return int(b.BuildWaitTimeout / time.Second)
}

// AMILocationRegex is the valid_ami_location_regex that matches the AMIs
// bake names for worker with prefix in account (ImageLocation
// "ACCOUNT/PREFIX-WORKER-YYYYMMDD-hhmmss", see fleet.AMIName): its one
// group is the date and time, so EC2LatentWorker, which sorts the matches
// by that group, picks the newest. It is the same expression in Go and in
// Python's re.
func AMILocationRegex(account, prefix, worker string) string {
	return "^" + regexp.QuoteMeta(account+"/"+prefix+"-"+worker+"-") + `([0-9]{8}-[0-9]{6})$`
}

// Secret file names on the master, derived from the worker name (a
// buildbot identifier, so a safe file name).

// PasswordSecretName is the name of the secret (a file in SecretsDir)
// that holds the worker password: util.Secret(PasswordSecretName(w)).
func PasswordSecretName(worker string) string { return worker + "-password" }

// AccessKeyIDSecretName is the name of the file in SecretsDir that holds
// the access key ID.
func AccessKeyIDSecretName(worker string) string { return worker + "-aws-access-key-id" }

// SecretAccessKeySecretName is the name of the file in SecretsDir that
// holds the secret access key.
func SecretAccessKeySecretName(worker string) string { return worker + "-aws-secret-access-key" }

// FieldError is a problem with one field of a Bundle ("Tags[Name]"), or of
// a handoff's inputs (CheckInputs: a config key or a flag).
type FieldError = field.Error

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid handoff bundle")

// maxWorkerName is buildbot's limit (config/master.py).
const maxWorkerName = 50

var (
	// workerRE is buildbot's ident_re restricted to ASCII: the name is
	// also a file name and part of the secret names.
	workerRE       = regexp.MustCompile(`^[A-Za-z_-][A-Za-z0-9_-]*$`)
	regionRE       = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*\.[a-z0-9]+(-[a-z0-9]+)*$`)
	amiRE          = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	accountRE      = regexp.MustCompile(`^[0-9]{12}$`)
	sgRE           = regexp.MustCompile(`^sg-([0-9a-f]{8}|[0-9a-f]{17})$`)
	subnetRE       = regexp.MustCompile(`^subnet-([0-9a-f]{8}|[0-9a-f]{17})$`)
	accessKeyIDRE  = regexp.MustCompile(`^(AKIA|ASIA)[A-Z0-9]{12,124}$`)
	secretKeyRE    = regexp.MustCompile(`^[A-Za-z0-9/+=]{16,128}$`)
	// keyPairRE is iam's: what keeps an ARN and a wildcard intact.
	keyPairRE = regexp.MustCompile(`^[A-Za-z0-9 ._+=,@:/-]{1,255}$`)
	profileRE = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	tagKeyRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
)

// Validate checks b and returns every problem at once, each a *FieldError,
// joined and wrapped with ErrInvalid. Every renderer calls it first: a
// bundle that passes has no value that could change the meaning of the
// text, JSON or Python it is rendered into. The secret is never quoted in
// an error.
func (b Bundle) Validate() error {
	var errs []error
	bad := func(field, value, problem string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Rule: problem})
	}
	check := func(field, value string, re *regexp.Regexp, problem string) {
		if !re.MatchString(value) {
			bad(field, value, problem)
		}
	}

	check("WorkerName", b.WorkerName, workerRE, "not a buildbot worker name (ASCII letters, digits, '_' and '-', not starting with a digit)")
	if len(b.WorkerName) > maxWorkerName {
		bad("WorkerName", b.WorkerName, fmt.Sprintf("longer than buildbot's %d characters", maxWorkerName))
	}
	if host, port, err := net.SplitHostPort(b.MasterAddress); err != nil {
		bad("MasterAddress", b.MasterAddress, "not host:port")
	} else {
		if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
			bad("MasterAddress", b.MasterAddress, "the host is neither an IP address nor a DNS name")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad("MasterAddress", b.MasterAddress, "the port is not a number from 1 to 65535")
		}
	}
	if len(b.InstanceTypes) == 0 {
		bad("InstanceTypes", "", "at least one instance type is required")
	}
	for i, t := range b.InstanceTypes {
		check(fmt.Sprintf("InstanceTypes[%d]", i), t, instanceTypeRE, `not an instance type such as "t3.small"`)
	}
	check("Region", b.Region, regionRE, `not a full region name such as "eu-west-1"`)
	check("AMI", b.AMI, amiRE, "not an AMI ID (ami- and 8 or 17 hex digits)")
	if b.FindNewest {
		check("AMIOwner", b.AMIOwner, accountRE, "not a 12-digit AWS account ID")
		if _, err := regexp.Compile(b.AMILocationRegex); err != nil || b.AMILocationRegex == "" ||
			strings.IndexFunc(b.AMILocationRegex, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			bad("AMILocationRegex", b.AMILocationRegex, "not a regular expression of printable ASCII")
		}
	}
	if b.ReplacesAMI != "" {
		check("ReplacesAMI", b.ReplacesAMI, amiRE, "not an AMI ID (ami- and 8 or 17 hex digits)")
	}
	check("AccessKeyID", b.AccessKeyID, accessKeyIDRE, "not an access key ID (AKIA or ASIA and capital letters or digits)")
	if s := b.SecretAccessKey.Reveal(); s != "" && !secretKeyRE.MatchString(s) {
		bad("SecretAccessKey", "", "not a secret access key (16-128 letters, digits and /+=)")
	}
	check("KeyPairName", b.KeyPairName, keyPairRE, "not a key pair name (1-255 letters, digits, spaces and ._+=,@:/-)")
	check("SecurityGroupID", b.SecurityGroupID, sgRE, "not a security group ID (sg- and 8 or 17 hex digits)")
	check("SubnetID", b.SubnetID, subnetRE, "not a subnet ID (subnet- and 8 or 17 hex digits)")
	check("InstanceProfileName", b.InstanceProfileName, profileRE, "not an instance profile name (1-128 letters, digits and _+=,.@-)")
	for _, k := range slices.Sorted(maps.Keys(b.Tags)) {
		check("Tags key", k, tagKeyRE, "not a valid tag key")
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			bad("Tags key", k, `the "aws:" prefix is reserved`)
		}
		check("Tags["+k+"]", b.Tags[k], tagValRE, "not a valid tag value")
		// \p{Z} admits separators other than a plain space (U+2028
		// LINE SEPARATOR among them): keep the text one tag a line.
		if strings.IndexFunc(k+b.Tags[k], func(r rune) bool { return unicode.IsSpace(r) && r != ' ' }) >= 0 {
			bad("Tags["+k+"]", b.Tags[k], "only plain spaces are allowed")
		}
	}
	if b.KeepaliveInterval < 0 {
		bad("KeepaliveInterval", strconv.Itoa(b.KeepaliveInterval), "must not be negative")
	}
	if b.BuildWaitTimeout < 0 || b.BuildWaitTimeout%time.Second != 0 {
		bad("BuildWaitTimeout", b.BuildWaitTimeout.String(), "must be whole seconds, not negative")
	}
	if d := b.SecretsDir; d != "" {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || strings.IndexFunc(d, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			bad("SecretsDir", d, "not a clean absolute path of printable ASCII")
		}
	}
	if o := b.Changes.OldAMI; o != "" {
		check("Changes.OldAMI", o, amiRE, "not an AMI ID (ami- and 8 or 17 hex digits)")
		if o == b.AMI {
			bad("Changes.OldAMI", o, "is the new AMI: nothing changed")
		}
	}
	if o := b.Changes.OldAccessKeyID; o != "" {
		check("Changes.OldAccessKeyID", o, accessKeyIDRE, "not an access key ID")
		if o == b.AccessKeyID {
			bad("Changes.OldAccessKeyID", o, "is the new key: nothing changed")
		}
		if b.SecretAccessKey.IsZero() {
			bad("SecretAccessKey", "", "a rotated key needs its secret in the bundle")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

// CheckInputs checks what a handoff is asked to use, before it creates
// anything: the worker name and master address, the key pair name, the
// AMI and subnet IDs when given. Each problem is a *FieldError naming the
// flag or key it came from.
func CheckInputs(worker, master, keyPairName, ami, subnet string) error {
	var errs []error
	bad := func(field, value, problem string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Rule: problem})
	}
	if !workerRE.MatchString(worker) || len(worker) > maxWorkerName {
		bad("worker.name", worker, fmt.Sprintf("not a buildbot worker name (1-%d ASCII letters, digits, '_' and '-', not starting with a digit)", maxWorkerName))
	}
	if host, port, err := net.SplitHostPort(master); err != nil || (net.ParseIP(host) == nil && !hostRE.MatchString(host)) {
		bad("worker.master", master, "not host:port")
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		bad("worker.master", master, "the port is not a number from 1 to 65535")
	}
	if keyPairName != "" && !keyPairRE.MatchString(keyPairName) {
		bad("--key-pair-name", keyPairName, "not a key pair name (1-255 letters, digits, spaces and ._+=,@:/-)")
	}
	if ami != "" && !amiRE.MatchString(ami) {
		bad("--ami", ami, "not an AMI ID (ami- and 8 or 17 hex digits)")
	}
	if subnet != "" && !subnetRE.MatchString(subnet) {
		bad("aws.subnet_id", subnet, "not a subnet ID (subnet- and 8 or 17 hex digits)")
	}
	return errors.Join(errs...)
}
