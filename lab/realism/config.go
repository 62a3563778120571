package realism

import (
	"fmt"
	"path"
	"regexp"
	"time"
)

// Config is the `[realism]` section of the lab file. The zero value is the
// lab as it is without it: every knob off.
type Config struct {
	// Seed makes the faults' random draws repeatable (0: a fresh seed).
	Seed int64 `toml:"seed"`
	// Throttle is the fraction of requests answered RequestLimitExceeded
	// (EC2: HTTP 503; IAM and STS: Throttling, HTTP 400) without reaching
	// moto.
	Throttle float64 `toml:"throttle"`
	// ServerErrors is the fraction answered InternalError (500) or
	// ServiceUnavailable (503), half each, without reaching moto.
	ServerErrors float64 `toml:"server_errors"`
	// LostAnswers is the fraction that moto carries out and whose answer
	// is then replaced by InternalError (500): the call took effect, the
	// caller does not know it.
	LostAnswers float64 `toml:"lost_answers"`
	// FaultActions limits the three faults above to these actions (e.g.
	// "CreateSecurityGroup"); empty: every action.
	FaultActions []string `toml:"fault_actions"`
	// FaultServices are the services the faults apply to: "ec2", "iam",
	// "sts". Empty: ec2 only.
	FaultServices []string `toml:"fault_services"`

	// Consistency is how long a new instance, image, security group, key
	// pair, snapshot or volume answers NotFound to requests that name it
	// (by ID, or key pair and group by name), as EC2's eventual
	// consistency does.
	Consistency Duration `toml:"consistency"`
	// TerminatedListed is how long a terminated instance stays listed by
	// DescribeInstances (AWS: about an hour); later it is gone and its ID
	// answers InvalidInstanceID.NotFound. Zero: listed for the lab's life.
	TerminatedListed Duration `toml:"terminated_listed"`
	// BootDelay keeps a launched or started instance pending this much
	// longer than its boot takes (from the first answer that would have
	// shown it running).
	BootDelay Duration `toml:"boot_delay"`
	// ConsoleDelay keeps GetConsoleOutput empty for this long after an
	// instance shows running (or, while no answer has shown its state,
	// after its launch or start plus BootDelay) and after a reboot: AWS
	// posts the console output a while after a state transition.
	ConsoleDelay Duration `toml:"console_delay"`
	// LatestNitroOnly refuses GetConsoleOutput with Latest=true for
	// instance types that are not built on the Nitro system (XenTypes),
	// with UnsupportedOperation, as AWS does.
	LatestNitroOnly bool `toml:"latest_nitro_only"`
	// XenTypes are the instance types (globs: "t2.*") LatestNitroOnly
	// treats as Xen. Empty: DefaultXenTypes.
	XenTypes []string `toml:"xen_types"`

	// The shape of the account, unlike the lab's default one (a default
	// VPC whose subnets map public IPs, IAM in force at once, every region
	// enabled, account 123456789012).

	// NoDefaultVPC: the regions have no default VPC, as many accounts of
	// an organisation: DescribeVpcs shows none (is-default finds
	// nothing), DescribeSubnets no default subnet, and RunInstances
	// without a subnet or CreateSecurityGroup without a VPC answer
	// VPCIdNotSpecified. The VPC moto made stays, as an ordinary one.
	NoDefaultVPC bool `toml:"no_default_vpc"`
	// NoPublicIPs: subnets do not map public IPs (mapPublicIpOnLaunch is
	// false, as for every subnet not of a default VPC): an instance has a
	// public address only when its launch asks for one (a network
	// interface with AssociatePublicIpAddress), else its private one only.
	NoPublicIPs bool `toml:"no_public_ips"`
	// IAMProfileDelay: an instance profile created through the endpoint
	// is unknown to EC2 this long (IAM propagates): RunInstances naming it
	// (DryRun too) answers InvalidParameterValue "Invalid IAM Instance
	// Profile name".
	IAMProfileDelay Duration `toml:"iam_profile_delay"`
	// IAMKeyDelay: an access key created through the endpoint is not yet
	// valid this long: its requests answer AuthFailure (EC2) or
	// InvalidClientTokenId (IAM, STS).
	IAMKeyDelay Duration `toml:"iam_key_delay"`
	// DisabledRegions are opt-in regions not enabled for the account:
	// DescribeRegions lists them (with AllRegions) as not-opted-in, and
	// every EC2 request there answers AuthFailure.
	DisabledRegions []string `toml:"disabled_regions"`
	// DeniedRegions are regions an organisation's service control policy
	// denies: every EC2 request there (DryRun too) answers
	// UnauthorizedOperation.
	DeniedRegions []string `toml:"denied_regions"`
	// FailedCopies are regions where CopyImage is accepted and the copy
	// then ends failed, with a state reason, as AWS's does when the
	// destination refuses it late (a KMS grant, a quota).
	FailedCopies []string `toml:"failed_copies"`
	// InsufficientCapacity are instance types (globs) whose launches are
	// accepted and then end terminated with the state reason
	// Server.InsufficientInstanceCapacity.
	InsufficientCapacity []string `toml:"insufficient_capacity"`
	// AccountID is the lab's account (moto's MOTO_ACCOUNT_ID), e.g. one
	// with a leading zero; empty: 123456789012.
	AccountID string `toml:"account_id"`
}

// DefaultXenTypes are the instance families AWS runs on the Xen hypervisor
// rather than the Nitro system (AWS's list of Xen-based instances; the
// later families, i3en or p3dn for instance, are Nitro).
var DefaultXenTypes = []string{
	"t1.*", "t2.*", "m1.*", "m2.*", "m3.*", "m4.*", "c1.*", "c3.*", "c4.*",
	"r3.*", "r4.*", "x1.*", "x1e.*", "d2.*", "h1.*", "i2.*", "i3.*",
	"f1.*", "g2.*", "g3.*", "g3s.*", "p2.*", "p3.*",
	"cc1.*", "cc2.*", "cg1.*", "cr1.*", "hi1.*", "hs1.*",
}

// Enabled reports whether any knob is on.
func (c Config) Enabled() bool {
	return c.Throttle > 0 || c.ServerErrors > 0 || c.LostAnswers > 0 ||
		c.Consistency.Duration > 0 || c.TerminatedListed.Duration > 0 ||
		c.BootDelay.Duration > 0 || c.ConsoleDelay.Duration > 0 || c.LatestNitroOnly ||
		c.NoDefaultVPC || c.NoPublicIPs || c.IAMProfileDelay.Duration > 0 || c.IAMKeyDelay.Duration > 0 ||
		len(c.DisabledRegions) > 0 || len(c.DeniedRegions) > 0 || len(c.FailedCopies) > 0 || len(c.InsufficientCapacity) > 0
}

// Validate checks the section; errors name the key as written in the lab
// file.
func (c Config) Validate() error {
	for _, r := range []struct {
		key string
		v   float64
	}{{"throttle", c.Throttle}, {"server_errors", c.ServerErrors}, {"lost_answers", c.LostAnswers}} {
		if r.v < 0 || r.v > 1 {
			return fmt.Errorf("lab file: realism.%s = %v: must be a fraction from 0 to 1", r.key, r.v)
		}
	}
	if sum := c.Throttle + c.ServerErrors + c.LostAnswers; sum > 1 {
		return fmt.Errorf("lab file: realism: throttle + server_errors + lost_answers = %v: must be at most 1", sum)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"consistency", c.Consistency.Duration}, {"terminated_listed", c.TerminatedListed.Duration},
		{"boot_delay", c.BootDelay.Duration}, {"console_delay", c.ConsoleDelay.Duration},
		{"iam_profile_delay", c.IAMProfileDelay.Duration}, {"iam_key_delay", c.IAMKeyDelay.Duration}} {
		if d.v < 0 {
			return fmt.Errorf("lab file: realism.%s = %s: must not be negative", d.key, d.v)
		}
	}
	for _, s := range c.FaultServices {
		if s != "ec2" && s != "iam" && s != "sts" {
			return fmt.Errorf("lab file: realism.fault_services: %q: must be ec2, iam or sts", s)
		}
	}
	for _, a := range c.FaultActions {
		if !actionName.MatchString(a) {
			return fmt.Errorf("lab file: realism.fault_actions: %q: must be an API action name like CreateSecurityGroup", a)
		}
	}
	for _, l := range []struct {
		key     string
		regions []string
	}{{"disabled_regions", c.DisabledRegions}, {"denied_regions", c.DeniedRegions}, {"failed_copies", c.FailedCopies}} {
		for _, r := range l.regions {
			if !regionName.MatchString(r) {
				return fmt.Errorf("lab file: realism.%s: %q: must be a region name like eu-west-1", l.key, r)
			}
		}
	}
	if a := c.AccountID; a != "" && !accountID.MatchString(a) {
		return fmt.Errorf("lab file: realism.account_id = %q: must be 12 digits (a leading zero is allowed)", a)
	}
	for _, g := range c.InsufficientCapacity {
		if _, err := path.Match(g, "t2.micro"); err != nil || g == "" {
			return fmt.Errorf("lab file: realism.insufficient_capacity: %q: must be an instance type or a glob like \"t3.*\"", g)
		}
	}
	for _, g := range c.XenTypes {
		if _, err := path.Match(g, "t2.micro"); err != nil || g == "" {
			return fmt.Errorf("lab file: realism.xen_types: %q: must be an instance type or a glob like \"t2.*\"", g)
		}
	}
	return nil
}

var (
	actionName = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
	regionName = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	accountID  = regexp.MustCompile(`^[0-9]{12}$`)
)

// matchType reports whether instanceType matches one of globs.
func matchType(globs []string, instanceType string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, instanceType); ok {
			return true
		}
	}
	return false
}

// Xen reports whether instanceType is one of the Xen types.
func (c Config) Xen(instanceType string) bool {
	globs := c.XenTypes
	if len(globs) == 0 {
		globs = DefaultXenTypes
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, instanceType); ok {
			return true
		}
	}
	return false
}

func (c Config) faultsOn(service, action string) bool {
	services := c.FaultServices
	if len(services) == 0 {
		services = []string{"ec2"}
	}
	in := false
	for _, s := range services {
		in = in || s == service
	}
	if !in {
		return false
	}
	if len(c.FaultActions) == 0 {
		return true
	}
	for _, a := range c.FaultActions {
		if a == action {
			return true
		}
	}
	return false
}

// Duration is a time.Duration written as "5s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
