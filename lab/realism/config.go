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
		c.BootDelay.Duration > 0 || c.ConsoleDelay.Duration > 0 || c.LatestNitroOnly
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
		{"boot_delay", c.BootDelay.Duration}, {"console_delay", c.ConsoleDelay.Duration}} {
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
	for _, g := range c.XenTypes {
		if _, err := path.Match(g, "t2.micro"); err != nil || g == "" {
			return fmt.Errorf("lab file: realism.xen_types: %q: must be an instance type or a glob like \"t2.*\"", g)
		}
	}
	return nil
}

var actionName = regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)

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
