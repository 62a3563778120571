package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/latentworker/latentworker/field"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// FieldError reports one key that Validate rejected: Field is the config
// key ("aws.instance_type", "aws.tags.team").
type FieldError = field.Error

// Limits Validate applies.
const (
	// MaxTags is the number of extra tags allowed: AWS allows 50 per
	// resource and latentworker sets its own.
	MaxTags          = 40
	maxTagKeyLen     = 128
	maxTagValueLen   = 256
	maxNamePrefixLen = 32
	maxBaseNameLen   = 128
)

// ReservedTagPrefix starts the tag keys latentworker sets itself; extra tags
// may not use it (nor AWS's "aws:").
const ReservedTagPrefix = "latentworker:"

var (
	regionRE       = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*\.[a-z0-9]+(-[a-z0-9]+)*$`)
	amiRE          = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	subnetRE       = regexp.MustCompile(`^subnet-([0-9a-f]{8}|[0-9a-f]{17})$`)
	hostIDRE       = regexp.MustCompile(`^h-[0-9a-f]{17}$`)
	ownerRE        = regexp.MustCompile(`^([0-9]{12}|amazon|aws-marketplace|self)$`)
	envNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userRE         = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	// A Windows local user: up to 20 characters, case-insensitive.
	windowsUserRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,19}$`)
	namePrefixRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	// A KMS key: ID (a UUID, or mrk- and 32 hex digits for a multi-Region
	// key), key ARN, alias/NAME, or alias ARN.
	kmsKeyRE = regexp.MustCompile(`^(` + kmsID + `|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/` + kmsID + `|alias/[A-Za-z0-9/_-]{1,250})|alias/[A-Za-z0-9/_-]{1,250})$`)
	// AMI names allow letters, digits, ( ) [ ] space . / - ' @ _; a
	// pattern adds the * and ? wildcards.
	baseNameRE = regexp.MustCompile(`^[A-Za-z0-9()\[\] ./'@_*?-]+$`)
)

// workerKeys maps scripts.FieldError fields to config keys.
var workerKeys = map[string]string{
	"Name":       "worker.name",
	"Master":     "worker.master",
	"AdminName":  "worker.admin_name",
	"AdminEmail": "worker.admin_email",
	"HostInfo":   "worker.host_info",
}

// Validate checks every key and returns nil or the errors.Join of one
// *FieldError per problem, each naming its key and what the key allows. It
// reads the local files the configuration names (the password file's mode,
// not its content; the extra scripts) and makes no network call. The rules:
//   - worker.*: those of scripts.Worker.Validate; host_info may be empty
//   - worker.password_env: empty or an environment variable name
//   - worker.password_file: empty, or a readable regular file of mode 0600
//     or stricter
//   - aws.region: empty or a region name such as us-east-1
//   - aws.instance_type: family.size, such as t3.large
//   - aws.subnet_id: empty or subnet- and 8 or 17 hex digits
//   - aws.host_id: empty or h- and 17 hex digits; required when the
//     platform runs only on a dedicated host (macOS)
//   - aws.ssh_cidr: empty or an IPv4 or IPv6 prefix in canonical form, not /0
//   - aws.tags: at most MaxTags; keys 1-128 characters, values up to 256,
//     letters, digits, spaces and _ . : / = + - @; no "aws:" or
//     ReservedTagPrefix key
//   - image.platform: one of scripts.Platforms()
//   - image.base_ami: empty or ami- and 8 or 17 hex digits; not together
//     with image.base_owner or image.base_name
//   - image.base_owner: empty, a 12-digit account ID, amazon,
//     aws-marketplace or self
//   - image.base_name: empty or an AMI name pattern, 1-128 characters
//   - image.root_volume_gib: MinRootVolumeGiB to MaxRootVolumeGiB
//   - image.ssh_user: empty or a Linux user name
//   - image.extra_scripts: each a readable regular file
//   - aws.copy_to_regions: each a region of Regions, in aws.region's
//     partition, listed once; not the bake's region (CheckCopyRegions,
//     once the region is known: handoff --region R hands off the copy in
//     one of them)
//   - image.kms_key_id: empty, a KMS key ID, key ARN, alias/NAME or alias
//     ARN; an ARN of aws.region
//   - image.name_prefix: 1-32 letters, digits, '.', '_' or '-', starting
//     and ending with a letter or digit
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, value, rule string, err error) {
		o := c.origins[key]
		if i := strings.Index(key, "["); i >= 0 {
			o = c.origins[key[:i]]
		}
		if strings.HasPrefix(key, "aws.tags.") {
			o = c.origins["aws.tags"]
		}
		errs = append(errs, &FieldError{Field: key, Value: value, Origin: o.describe(), Rule: rule, Err: err})
	}

	// [worker]
	w := c.ScriptWorker("")
	if c.Worker.HostInfo == "" {
		w.HostInfo = "generated" // checked when it is rendered
	}
	w.Version = "" // image.worker_version, checked with [image]
	if err := w.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var fe *scripts.FieldError
			if errors.As(e, &fe) && workerKeys[fe.Field] != "" {
				bad(workerKeys[fe.Field], fe.Value, fe.Rule, e)
			} else {
				errs = append(errs, fmt.Errorf("worker: %w", e))
			}
		}
	}
	if v := c.Worker.PasswordEnv; v != "" && !envNameRE.MatchString(v) {
		bad("worker.password_env", v, "must be empty or an environment variable name (letters, digits and '_', not starting with a digit)", nil)
	}
	if v := c.Worker.PasswordFile; v != "" {
		if err := checkPasswordFile(v); err != nil {
			bad("worker.password_file", v, fileRule(err), err)
		}
	}

	// [aws]
	if v := c.AWS.Region; v != "" && (!regionRE.MatchString(v) || !KnownRegion(v)) {
		bad("aws.region", v, "must be empty (the SDK's region) or an AWS region name such as us-east-1 or eu-west-3 (one of "+strings.Join(Regions, ", ")+")", nil)
	}
	if v := c.AWS.InstanceType; !instanceTypeRE.MatchString(v) {
		bad("aws.instance_type", v, "must be an instance type, family.size, such as t3.large or m7i-flex.xlarge", nil)
	}
	if v := c.AWS.SubnetID; v != "" && !subnetRE.MatchString(v) {
		bad("aws.subnet_id", v, "must be empty (the default VPC) or a subnet ID: subnet- and 8 or 17 hex digits", nil)
	}
	if v := c.AWS.SSHAddress; v != "" && v != SSHPublic && v != SSHPrivate {
		bad("aws.ssh_address", v, "must be public (the builder's public IPv4, or IPv6 with an IPv6 aws.ssh_cidr) or private (its private IPv4, from inside the VPC, a VPN or a bastion)", nil)
	}
	if v := c.AWS.HostID; v != "" && !hostIDRE.MatchString(v) {
		bad("aws.host_id", v, "must be empty or a dedicated host ID: h- and 17 hex digits", nil)
	}
	if p, err := c.Image.PlatformInfo(); err == nil && p.NeedsHost && c.AWS.HostID == "" {
		bad("aws.host_id", "", p.Title+" instances run only on a dedicated host: allocate one in the region "+
			"(AWS bills a mac host for at least 24 hours, so latentworker never allocates one) and set its ID", nil)
	}
	if v := c.AWS.SSHCIDR; v != "" {
		if rule := checkCIDR(v); rule != "" {
			bad("aws.ssh_cidr", v, rule, nil)
		}
	}
	if n := len(c.AWS.Tags); n > MaxTags {
		bad("aws.tags", strconv.Itoa(n)+" tags", fmt.Sprintf("at most %d extra tags (AWS allows 50 per resource and latentworker sets its own)", MaxTags), nil)
	}
	for _, k := range slices.Sorted(maps.Keys(c.AWS.Tags)) {
		key := toml.Key{"aws", "tags", k}.String()
		if rule := checkTagKey(k); rule != "" {
			bad(key, k, "tag key "+rule, nil)
		}
		if rule := checkTagValue(c.AWS.Tags[k]); rule != "" {
			bad(key, c.AWS.Tags[k], "tag value "+rule, nil)
		}
	}

	seen := map[string]bool{}
	for i, r := range c.AWS.CopyToRegions {
		key := fmt.Sprintf("aws.copy_to_regions[%d]", i)
		switch {
		case !KnownRegion(r):
			bad(key, r, "must be an AWS region name such as us-west-2 or eu-west-1 (one of "+strings.Join(Regions, ", ")+")", nil)
		case c.AWS.Region != "" && Partition(r) != Partition(c.AWS.Region):
			bad(key, r, "is in the "+Partition(r)+" partition, aws.region in "+Partition(c.AWS.Region)+": an AMI is copied only within a partition", nil)
		case seen[r]:
			bad(key, r, "is listed twice", nil)
		}
		seen[r] = true
	}

	// [image]
	p, perr := c.Image.PlatformInfo()
	if perr != nil {
		bad("image.platform", c.Image.Platform, "must be one of "+strings.Join(platform.Names(), ", "), nil)
	} else if !p.OfficialBase() {
		if c.Image.BaseAMI == "" && (c.Image.BaseOwner == "" || c.Image.BaseName == "") {
			bad("image.base_ami", c.Image.BaseAMI, p.Title+" has no official AMI: set image.base_ami (or image.base_owner and image.base_name)", nil)
		}
		if c.Image.SSHUser == "" && p.SSHUser == "" {
			bad("image.ssh_user", "", p.Title+" has no official AMI: set the login user of your base image", nil)
		}
	}
	switch v := c.Image.Install; v {
	case "":
	case string(platform.Pip):
		if base, err := platform.Lookup(c.Image.Platform); err == nil && base.Install == platform.NixOSModule {
			bad("image.install", v, p.Title+" runs the worker from its services.buildbot-worker module: must be empty", nil)
		}
	case string(platform.Package):
		if perr == nil && p.Install != platform.Package {
			bad("image.install", v, p.Title+" has no buildbot-worker package: must be empty or pip", nil)
		}
	default:
		bad("image.install", v, "must be empty (the platform's way), package or pip", nil)
	}
	if v := c.Image.WorkerVersion; v != "" {
		if !scripts.ValidVersion(v) {
			bad("image.worker_version", v, "must be empty (the newest) or a buildbot-worker release such as 4.3.0: digits and dots, then letters, digits, '.', '!' or '+'", nil)
		} else if perr == nil && p.Install != platform.Pip {
			bad("image.worker_version", v, p.Title+" installs the distribution's package, whose version is the release's: set image.install = \"pip\" to pin one", nil)
		}
	}
	if v := c.Image.BaseAMI; v != "" {
		if !amiRE.MatchString(v) {
			bad("image.base_ami", v, "must be empty (use the filter) or an AMI ID: ami- and 8 or 17 hex digits", nil)
		}
		if c.Image.BaseOwner != "" || c.Image.BaseName != "" {
			bad("image.base_ami", v, "set either image.base_ami or the filter image.base_owner/image.base_name, not both", nil)
		}
	}
	if v := c.Image.BaseOwner; v != "" && !ownerRE.MatchString(v) {
		bad("image.base_owner", v, "must be empty (the platform's publisher), a 12-digit account ID, amazon, aws-marketplace or self", nil)
	}
	if v := c.Image.BaseName; v != "" && (len(v) > maxBaseNameLen || !baseNameRE.MatchString(v)) {
		bad("image.base_name", v, fmt.Sprintf("must be empty (the platform's default) or an AMI name pattern of 1-%d letters, digits, spaces, ( ) [ ] . / ' @ _ - and the wildcards * and ?", maxBaseNameLen), nil)
	}
	if v := c.Image.RootVolumeGiB; v < MinRootVolumeGiB || v > MaxRootVolumeGiB {
		bad("image.root_volume_gib", strconv.Itoa(v), fmt.Sprintf("must be %d to %d (GiB; the buildbot guide asks for 30 GB of free disk)", MinRootVolumeGiB, MaxRootVolumeGiB), nil)
	}
	if v := c.Image.SSHUser; v != "" && perr == nil {
		if rule := CheckLoginUser(p, v); rule != "" {
			bad("image.ssh_user", v, "must be empty (the platform's default user) or "+rule, nil)
		}
	}
	for i, p := range c.Image.ExtraScripts {
		if err := checkReadableFile(p); err != nil {
			bad(fmt.Sprintf("image.extra_scripts[%d]", i), p, fileRule(err), err)
		}
	}
	for i, n := range c.Image.ExtraPackages {
		if err := scripts.ValidPackageName(n); err != nil {
			bad(fmt.Sprintf("image.extra_packages[%d]", i), n, "must be a package name: letters, digits and + . _ - : @ % /, starting with a letter or digit", nil)
		}
	}
	if p, err := platform.Lookup(c.Image.Platform); err == nil && p.BuildDeps == nil && c.Image.CPythonBuildDeps {
		bad("image.cpython_build_deps", "true", "must be false on "+p.Name+": it has no list of CPython's build dependencies", nil)
	}
	if p, err := platform.Lookup(c.Image.Platform); err == nil && p.Family == platform.Windows && len(c.Image.ExtraPackages) > 0 {
		bad("image.extra_packages", strings.Join(c.Image.ExtraPackages, ","), "must be empty on "+p.Name+": Windows has no package manager here (use image.extra_scripts)", nil)
	}
	if v := c.Image.KMSKeyID; v != "" && !kmsKeyRE.MatchString(v) {
		bad("image.kms_key_id", v, "must be empty (the region's default EBS key) or a KMS key ID (a UUID or mrk- and 32 hex digits), key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), alias/NAME or alias ARN", nil)
	} else if r := kmsKeyRegion(v); r != "" && c.AWS.Region != "" && r != c.AWS.Region {
		bad("image.kms_key_id", v, "is a key of "+r+", not of aws.region "+c.AWS.Region+": the builder's volume is encrypted in aws.region", nil)
	}
	if v := c.Image.NamePrefix; len(v) > maxNamePrefixLen || !namePrefixRE.MatchString(v) {
		bad("image.name_prefix", v, fmt.Sprintf("must be 1-%d letters, digits, '.', '_' or '-', starting and ending with a letter or digit", maxNamePrefixLen), nil)
	}
	return errors.Join(errs...)
}

// CheckLoginUser returns "" or what a login user name of platform p must
// be: a Windows user name (Administrator, up to 20 letters, digits, '.',
// '_' and '-') on Windows, else a Unix one (lower-case letters, digits,
// '_' and '-', up to 32).
func CheckLoginUser(p *platform.Platform, user string) string {
	if p != nil && p.Family == platform.Windows {
		if !windowsUserRE.MatchString(user) {
			return "a Windows user name such as Administrator: up to 20 letters, digits, '.', '_' and '-'"
		}
		return ""
	}
	if !userRE.MatchString(user) {
		return "a login name: lower-case letters, digits, '_' and '-', up to 32, not starting with a digit or '-'"
	}
	return ""
}

// unjoin returns the errors an errors.Join combined, or err alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkCIDR returns "" or what is wrong with an SSH source prefix.
func checkCIDR(s string) string {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return "must be empty (your public address/32) or an address prefix such as 203.0.113.7/32 or 2001:db8::/48"
	case p.Addr().Zone() != "" || p.Addr().Is4In6():
		return "must be a plain IPv4 or IPv6 prefix"
	case p.Masked() != p:
		return fmt.Sprintf("has host bits set; the prefix is %s", p.Masked())
	case p.Bits() == 0:
		return "would open SSH to the whole internet; name your own network"
	}
	return ""
}

// tagChar reports whether AWS allows r in tag keys and values everywhere.
func tagChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || strings.ContainsRune("_.:/=+-@", r)
}

func checkTagKey(k string) string {
	n := utf8.RuneCountInString(k)
	switch {
	case n < 1 || n > maxTagKeyLen:
		return fmt.Sprintf("must be 1-%d characters", maxTagKeyLen)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return "must not start with aws: (reserved by AWS)"
	case strings.HasPrefix(strings.ToLower(k), ReservedTagPrefix):
		return "must not start with " + ReservedTagPrefix + " (latentworker's own tags)"
	case strings.IndexFunc(k, func(r rune) bool { return !tagChar(r) }) >= 0:
		return "must be letters, digits, spaces and _ . : / = + - @"
	}
	return ""
}

func checkTagValue(v string) string {
	switch {
	case utf8.RuneCountInString(v) > maxTagValueLen:
		return fmt.Sprintf("must be at most %d characters", maxTagValueLen)
	case strings.IndexFunc(v, func(r rune) bool { return !tagChar(r) }) >= 0:
		return "must be letters, digits, spaces and _ . : / = + - @"
	}
	return ""
}

// ErrPasswordFileMode is returned (wrapped) for a password file that group
// or others may access.
var ErrPasswordFileMode = errors.New("password file must be mode 0600 or stricter")

// checkPasswordFile checks that the password file is a regular file that
// only its owner may access, and that it can be opened. It does not read it.
func checkPasswordFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("must be a regular file")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: it is %04o (chmod 600 %s)", ErrPasswordFileMode, perm, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// checkReadableFile checks that path is a regular file that can be opened.
func checkReadableFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("must be a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// fileRule words a file check's error without repeating the path, which
// the FieldError already shows.
func fileRule(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist (paths in the file are relative to the file)"
	case errors.Is(err, fs.ErrPermission):
		return "cannot be read: permission denied"
	case errors.As(err, &pe):
		return "cannot be read: " + pe.Err.Error()
	}
	return err.Error()
}

// CheckCopyRegions refuses aws.copy_to_regions naming region, the region
// the image is baked in (aws.region or the SDK's): bake and validate call
// it once the region is resolved.
func (c *Config) CheckCopyRegions(region string) error {
	for i, r := range c.AWS.CopyToRegions {
		if r == region {
			o := c.origins["aws.copy_to_regions"]
			return &FieldError{Field: fmt.Sprintf("aws.copy_to_regions[%d]", i), Value: r, Origin: o.describe(),
				Rule: "is the region the AMI is baked in (aws.region or the SDK's): copy only to other regions"}
		}
	}
	return nil
}
