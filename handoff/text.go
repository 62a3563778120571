package handoff

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// AMIWarning is the warning every rendering carries: the AMI holds the
// worker password.
const AMIWarning = "The AMI holds the worker password (in the worker's buildbot.tac): " +
	"keep it and its snapshots private, never share them with another account, " +
	"and never make them public. latentworker refuses to."

// TextOptions are the options of Text.
type TextOptions struct {
	// ShowSecret writes the secret access key into the text. Without it,
	// the text names SecretFile instead.
	ShowSecret bool
	// SecretFile is where the owner wrote the bundle with the secret
	// (WriteSecretFile), named when the secret is not shown.
	SecretFile string
}

// Text returns the bundle as the body of an email to the buildmaster
// admins: the four items the worker guide asks for first (instance size,
// full region, AMI ID, access key ID and secret), then what changed since
// the previous bundle, then the rest of the settings, then AMIWarning. It
// returns the errors of b.Validate.
func Text(b Bundle, opts TextOptions) (string, error) {
	if err := b.Validate(); err != nil {
		return "", fmt.Errorf("bundle text: %w", err)
	}
	var sb strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&sb, format+"\n", a...) }
	item := func(label, value string) { p("   %-22s %s", label+":", value) }

	p("Buildbot EC2 latent worker %s", b.WorkerName)
	p("")
	p("What the worker guide asks for:")
	p("")
	p("1. Instance size:")
	item("Instance type", b.InstanceTypes[0])
	if len(b.InstanceTypes) > 1 {
		item("Also allowed", strings.Join(b.InstanceTypes[1:], ", "))
	}
	item("Parallelism", b.parallelism())
	p("2. Region:")
	item("Region", b.Region)
	p("3. AMI ID:")
	if b.FindNewest {
		item("AMI", "the newest of the worker's AMIs, found by the master (today "+b.AMI+")")
		item("valid_ami_owners", "["+b.AMIOwner+"]")
		item("valid_ami_location_regex", b.AMILocationRegex)
	} else {
		item("AMI", b.AMI)
	}
	if b.ReplacesAMI != "" {
		item("Replaces", b.ReplacesAMI)
	}
	p("4. Access key of the worker's IAM user:")
	item("Access key ID", b.AccessKeyID)
	switch {
	case b.SecretAccessKey.IsZero():
		item("Secret access key", "unchanged: keep the one you have (AWS shows a secret only once)")
	case opts.ShowSecret:
		item("Secret access key", b.SecretAccessKey.Reveal())
	case opts.SecretFile != "":
		item("Secret access key", "not shown here; it is in the owner's file "+pyComment(opts.SecretFile)+" (mode 0600)")
	default:
		item("Secret access key", "not shown here; it is in the owner's bundle file (mode 0600)")
	}

	if !b.Changes.IsZero() {
		p("")
		p("What changed since the previous bundle (swap only these):")
		p("")
		if o := b.Changes.OldAMI; o != "" {
			item("AMI", o+" -> "+b.AMI+" (ami= in master.cfg)")
		}
		if o := b.Changes.OldAccessKeyID; o != "" {
			item("Access key ID", o+" -> "+b.AccessKeyID)
			p("   The old key stays active until you confirm the switch; the owner")
			p("   then retires it.")
		}
	}

	p("")
	p("The rest of the worker's settings (master.cfg's EC2LatentWorker):")
	p("")
	item("Worker name", b.WorkerName)
	item("Master address", b.MasterAddress)
	item("Key pair", b.KeyPairName)
	item("Security group ID", b.SecurityGroupID)
	item("Subnet ID", b.SubnetID)
	item("Instance profile", b.InstanceProfileName)
	if len(b.Tags) == 0 {
		item("Tags", "(none)")
	} else {
		label := "Tags:"
		for _, k := range slices.Sorted(maps.Keys(b.Tags)) {
			p("   %-22s %s = %s", label, k, b.Tags[k])
			label = ""
		}
	}
	item("Keepalive interval", fmt.Sprintf("%d s", b.keepalive()))
	item("Build wait timeout", fmt.Sprintf("%d s", b.buildWait()))
	p("")
	if b.FindNewest {
		p("The key is not \"full access to EC2\": it may launch only the worker's")
		p("completed AMIs of this account (a refresh adds one: nothing to change), these")
	} else {
		p("The key is not \"full access to EC2\": it may launch only this AMI, these")
	}
	p("instance types, with this key pair, security group, subnet and instance")
	p("profile, in this region; it may tag instances with exactly the tags above")
	p("and terminate only the instances it launched. Use these values as they are.")
	p("")
	p("WARNING: %s", AMIWarning)
	return sb.String(), nil
}

// bundleJSON is the JSON form of a Bundle.
type bundleJSON struct {
	WorkerName          string            `json:"worker_name"`
	MasterAddress       string            `json:"master_address"`
	InstanceType        string            `json:"instance_type"`
	InstanceTypes       []string          `json:"instance_types"`
	Region              string            `json:"region"`
	AMI                 string            `json:"ami"`
	ValidAMIOwners      []string          `json:"valid_ami_owners,omitempty"`
	ValidAMILocation    string            `json:"valid_ami_location_regex,omitempty"`
	ReplacesAMI         string            `json:"replaces_ami,omitempty"`
	AccessKeyID         string            `json:"access_key_id"`
	SecretAccessKey     string            `json:"secret_access_key,omitempty"`
	SecretUnchanged     bool              `json:"secret_access_key_unchanged,omitempty"`
	KeyPairName         string            `json:"keypair_name"`
	SecurityGroupIDs    []string          `json:"security_group_ids"`
	SubnetID            string            `json:"subnet_id"`
	InstanceProfileName string            `json:"instance_profile_name"`
	Tags                map[string]string `json:"tags"`
	ParallelTests       int               `json:"parallel_tests,omitempty"`
	ParallelBuilders    int               `json:"parallel_builders"`
	KeepaliveInterval   int               `json:"keepalive_interval"`
	BuildWaitTimeout    int               `json:"build_wait_timeout"`
	Secrets             secretNamesJSON   `json:"secret_files"`
	Changes             *changesJSON      `json:"changes,omitempty"`
	Warning             string            `json:"warning"`
}

type secretNamesJSON struct {
	Password        string `json:"password"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

type changeJSON struct {
	Old string `json:"old"`
	New string `json:"new"`
}

type changesJSON struct {
	AMI         *changeJSON `json:"ami,omitempty"`
	AccessKeyID *changeJSON `json:"access_key_id,omitempty"`
}

// JSON returns the bundle as indented JSON with a final newline. Keys are
// the EC2LatentWorker parameter names where there is one. The secret
// access key is included only with showSecret (and when the bundle has
// one); "secret_access_key_unchanged" is true when the key was reused.
// "secret_files" names the files the master.cfg snippet reads. It returns
// the errors of b.Validate.
func JSON(b Bundle, showSecret bool) ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("bundle JSON: %w", err)
	}
	tags := b.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	j := bundleJSON{
		WorkerName:          b.WorkerName,
		MasterAddress:       b.MasterAddress,
		InstanceType:        b.InstanceTypes[0],
		InstanceTypes:       b.InstanceTypes,
		Region:              b.Region,
		AMI:                 b.AMI,
		ReplacesAMI:         b.ReplacesAMI,
		AccessKeyID:         b.AccessKeyID,
		SecretUnchanged:     b.SecretAccessKey.IsZero(),
		KeyPairName:         b.KeyPairName,
		SecurityGroupIDs:    []string{b.SecurityGroupID},
		SubnetID:            b.SubnetID,
		InstanceProfileName: b.InstanceProfileName,
		Tags:                tags,
		ParallelTests:       b.ParallelTests,
		ParallelBuilders:    ParallelBuilders,
		KeepaliveInterval:   b.keepalive(),
		BuildWaitTimeout:    b.buildWait(),
		Secrets: secretNamesJSON{
			Password:        PasswordSecretName(b.WorkerName),
			AccessKeyID:     AccessKeyIDSecretName(b.WorkerName),
			SecretAccessKey: SecretAccessKeySecretName(b.WorkerName),
		},
		Warning: AMIWarning,
	}
	if b.FindNewest {
		j.ValidAMIOwners, j.ValidAMILocation = []string{b.AMIOwner}, b.AMILocationRegex
	}
	if showSecret {
		j.SecretAccessKey = b.SecretAccessKey.Reveal()
	}
	if !b.Changes.IsZero() {
		j.Changes = &changesJSON{}
		if o := b.Changes.OldAMI; o != "" {
			j.Changes.AMI = &changeJSON{Old: o, New: b.AMI}
		}
		if o := b.Changes.OldAccessKeyID; o != "" {
			j.Changes.AccessKeyID = &changeJSON{Old: o, New: b.AccessKeyID}
		}
	}
	out, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bundle JSON: %w", err)
	}
	return append(out, '\n'), nil
}
