package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Kind is the type of a key's value, as the documentation names it.
type Kind string

// Kinds of keys. A list key given through Set appends one element (a
// repeatable flag); a table key takes "k=v" pairs separated by commas and
// merges them into the table.
const (
	KindString Kind = "string"
	KindInt    Kind = "integer"
	KindBool   Kind = "boolean"
	KindList   Kind = "list"
	KindTable  Kind = "table"
)

// Key documents one configuration key. The same table drives the file,
// ApplyEnv, Set and the documentation.
type Key struct {
	Name     string // file key, "section.key", e.g. "aws.region"
	Kind     Kind   // type of the value
	Env      string // environment variable that overrides it, "" if none
	Flag     string // command-line flag name without dashes, "" if none
	Default  string // the default as text; "" when none, "per platform" when image.platform decides
	Required bool   // must be set: no default
	Help     string // one sentence
}

type keyDef struct {
	Key
	path  bool              // a path: relative to the config file, or to the working directory when set by env or flag
	field func(*Config) any // pointer to the field: *string, *int, *bool, *[]string or *map[string]string
}

var keyTable = []keyDef{
	{Key: Key{Name: "worker.name", Kind: KindString, Env: "LATENTWORKER_WORKER_NAME", Flag: "worker-name", Required: true,
		Help: "buildbot worker name, as given by the buildmaster admins"},
		field: func(c *Config) any { return &c.Worker.Name }},
	{Key: Key{Name: "worker.master", Kind: KindString, Env: "LATENTWORKER_MASTER", Flag: "master", Default: DefaultMaster,
		Help: "buildmaster host:port the worker connects to"},
		field: func(c *Config) any { return &c.Worker.Master }},
	{Key: Key{Name: "worker.admin_name", Kind: KindString, Env: "LATENTWORKER_ADMIN_NAME", Flag: "admin-name", Required: true,
		Help: "contact name for info/admin (public)"},
		field: func(c *Config) any { return &c.Worker.AdminName }},
	{Key: Key{Name: "worker.admin_email", Kind: KindString, Env: "LATENTWORKER_ADMIN_EMAIL", Flag: "admin-email", Required: true,
		Help: "contact address for info/admin, written obfuscated as \"user AT example.com\""},
		field: func(c *Config) any { return &c.Worker.AdminEmail }},
	{Key: Key{Name: "worker.host_info", Kind: KindString, Env: "LATENTWORKER_HOST_INFO", Flag: "host-info",
		Help: "info/host text (public); empty: generated from the OS and the instance type"},
		field: func(c *Config) any { return &c.Worker.HostInfo }},
	{Key: Key{Name: "worker.password_env", Kind: KindString, Env: "LATENTWORKER_PASSWORD_ENV", Flag: "password-env", Default: DefaultPasswordEnv,
		Help: "name of the environment variable holding the worker password; empty: not used"},
		field: func(c *Config) any { return &c.Worker.PasswordEnv }},
	{Key: Key{Name: "worker.password_file", Kind: KindString, Env: "LATENTWORKER_PASSWORD_FILE", Flag: "password-file",
		Help: "file holding the worker password on one line, mode 0600 or stricter; used when the variable is unset"},
		path: true, field: func(c *Config) any { return &c.Worker.PasswordFile }},

	{Key: Key{Name: "aws.region", Kind: KindString, Env: "LATENTWORKER_REGION", Flag: "region",
		Help: "AWS region; empty: AWS_REGION, AWS_DEFAULT_REGION or the profile's"},
		field: func(c *Config) any { return &c.AWS.Region }},
	{Key: Key{Name: "aws.instance_type", Kind: KindString, Env: "LATENTWORKER_INSTANCE_TYPE", Flag: "instance-type", Default: DefaultInstanceType,
		Help: "instance type of the builder (family.size), at least 2 vCPUs and 512 MiB"},
		field: func(c *Config) any { return &c.AWS.InstanceType }},
	{Key: Key{Name: "aws.subnet_id", Kind: KindString, Env: "LATENTWORKER_SUBNET_ID", Flag: "subnet-id",
		Help: "subnet to launch the builder in; empty: a default subnet of the default VPC in a zone offering the instance type (required where the region has no default VPC)"},
		field: func(c *Config) any { return &c.AWS.SubnetID }},
	{Key: Key{Name: "aws.associate_public_ip", Kind: KindBool, Env: "LATENTWORKER_ASSOCIATE_PUBLIC_IP", Flag: "associate-public-ip", Default: "false",
		Help: "give the builder a public IPv4 address whatever the subnet maps (a non-default subnet maps none); false: the subnet's setting"},
		field: func(c *Config) any { return &c.AWS.AssociatePublicIP }},
	{Key: Key{Name: "aws.ssh_address", Kind: KindString, Env: "LATENTWORKER_SSH_ADDRESS", Flag: "ssh-address", Default: SSHPublic,
		Help: "address of the builder bake connects to: public (its public IPv4, or IPv6 when aws.ssh_cidr is IPv6) or private (its private IPv4: a runner inside the VPC, a VPN or a bastion)"},
		field: func(c *Config) any { return &c.AWS.SSHAddress }},
	{Key: Key{Name: "aws.host_id", Kind: KindString, Env: "LATENTWORKER_HOST_ID", Flag: "host-id",
		Help: "dedicated host to launch the builder on (h- and 17 hex digits); required for macOS, whose hosts you allocate (billed for at least 24 hours)"},
		field: func(c *Config) any { return &c.AWS.HostID }},
	{Key: Key{Name: "aws.ssh_cidr", Kind: KindString, Env: "LATENTWORKER_SSH_CIDR", Flag: "ssh-cidr",
		Help: "addresses allowed to SSH to the builder: your public address as a /32; required against AWS (empty only with a loopback endpoint, the lab)"},
		field: func(c *Config) any { return &c.AWS.SSHCIDR }},
	{Key: Key{Name: "aws.tags", Kind: KindTable, Env: "LATENTWORKER_TAGS", Flag: "tag",
		Help: "extra tags on everything created; env and flag take k=v[,k=v...] and merge"},
		field: func(c *Config) any { return &c.AWS.Tags }},
	{Key: Key{Name: "aws.copy_to_regions", Kind: KindList, Flag: "copy-to-region",
		Help: "regions the verified AMI is copied to, tags included (not aws.region; no duplicates); the flag appends one"},
		field: func(c *Config) any { return &c.AWS.CopyToRegions }},

	{Key: Key{Name: "image.platform", Kind: KindString, Env: "LATENTWORKER_PLATFORM", Flag: "platform", Default: DefaultPlatform,
		Help: "OS release of the base image: a name from latentworker platforms (debian-12, debian-13, ubuntu-24.04, ...; debian and ubuntu are aliases)"},
		field: func(c *Config) any { return &c.Image.Platform }},
	{Key: Key{Name: "image.base_ami", Kind: KindString, Env: "LATENTWORKER_BASE_AMI", Flag: "base-ami",
		Help: "base AMI ID; empty: the newest image matching base_owner and base_name"},
		field: func(c *Config) any { return &c.Image.BaseAMI }},
	{Key: Key{Name: "image.base_owner", Kind: KindString, Env: "LATENTWORKER_BASE_OWNER", Flag: "base-owner", Default: "per platform",
		Help: "owner of the base image (account ID, amazon, aws-marketplace or self); the platform's publisher (latentworker platforms)"},
		field: func(c *Config) any { return &c.Image.BaseOwner }},
	{Key: Key{Name: "image.base_name", Kind: KindString, Env: "LATENTWORKER_BASE_NAME", Flag: "base-name", Default: "per platform",
		Help: "name pattern of the base image (* and ? wildcards), newest wins; the platform's (latentworker platforms)"},
		field: func(c *Config) any { return &c.Image.BaseName }},
	{Key: Key{Name: "image.root_volume_gib", Kind: KindInt, Env: "LATENTWORKER_ROOT_VOLUME_GIB", Flag: "root-volume-gib", Default: strconv.Itoa(MinRootVolumeGiB),
		Help: "root volume size in GiB, 30 to 16384"},
		field: func(c *Config) any { return &c.Image.RootVolumeGiB }},
	{Key: Key{Name: "image.ssh_user", Kind: KindString, Env: "LATENTWORKER_SSH_USER", Flag: "ssh-user", Default: "per platform",
		Help: "login user of the base image; the platform's (latentworker platforms)"},
		field: func(c *Config) any { return &c.Image.SSHUser }},
	{Key: Key{Name: "image.install", Kind: KindString, Env: "LATENTWORKER_INSTALL", Flag: "install", Default: "per platform",
		Help: "how buildbot-worker is installed: package (the distribution's) or pip (a venv in /opt/buildbot-worker, the guide's user, directory and unit); empty: the platform's"},
		field: func(c *Config) any { return &c.Image.Install }},
	{Key: Key{Name: "image.worker_version", Kind: KindString, Env: "LATENTWORKER_WORKER_VERSION", Flag: "worker-version",
		Help: "buildbot-worker version pip installs (e.g. 4.3.0); empty: the newest; only with pip"},
		field: func(c *Config) any { return &c.Image.WorkerVersion }},
	{Key: Key{Name: "image.cpython_build_deps", Kind: KindBool, Env: "LATENTWORKER_CPYTHON_BUILD_DEPS", Flag: "cpython-build-deps", Default: "true",
		Help: "install what CPython's build and tests need: git, a C toolchain, pkg-config, every optional module's headers (the devguide's list for the platform: latentworker platforms --json); false keeps a bare worker"},
		field: func(c *Config) any { return &c.Image.CPythonBuildDeps }},
	{Key: Key{Name: "image.extra_packages", Kind: KindList, Flag: "extra-package",
		Help: "packages installed with the platform's package manager with the build dependencies (not on Windows); a name the release lacks fails the bake naming it; the flag appends one"},
		field: func(c *Config) any { return &c.Image.ExtraPackages }},
	{Key: Key{Name: "image.extra_scripts", Kind: KindList, Flag: "extra-script",
		Help: "scripts run as root, in order, after the worker is set up; the flag appends one"},
		path: true, field: func(c *Config) any { return &c.Image.ExtraScripts }},
	{Key: Key{Name: "image.name_prefix", Kind: KindString, Env: "LATENTWORKER_NAME_PREFIX", Flag: "name-prefix", Default: DefaultNamePrefix,
		Help: "start of the AMI names: PREFIX-WORKER-YYYYMMDD-hhmmss (UTC), which sort by date"},
		field: func(c *Config) any { return &c.Image.NamePrefix }},
	{Key: Key{Name: "image.encrypted", Kind: KindBool, Env: "LATENTWORKER_ENCRYPTED", Flag: "encrypted", Default: "false",
		Help: "encrypt the root volume, so the AMI's snapshots (and its copies') are encrypted"},
		field: func(c *Config) any { return &c.Image.Encrypted }},
	{Key: Key{Name: "image.kms_key_id", Kind: KindString, Env: "LATENTWORKER_KMS_KEY_ID", Flag: "kms-key-id",
		Help: "KMS key of aws.region that encrypts it (key ID, ARN or alias/NAME; implies encrypted); empty: the region's default EBS key; copies use the same alias in their region, or their region's default key"},
		field: func(c *Config) any { return &c.Image.KMSKeyID }},
}

// Keys returns every configuration key in file order, for flags, help text
// and the README.
func Keys() []Key {
	keys := make([]Key, len(keyTable))
	for i, d := range keyTable {
		keys[i] = d.Key
	}
	return keys
}

// KeysMarkdown renders Keys as a Markdown table.
func KeysMarkdown() string {
	var b strings.Builder
	b.WriteString("| key | type | environment | flag | default | meaning |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	cell := func(s string) string {
		if s == "" {
			return ""
		}
		return "`" + s + "`"
	}
	for _, k := range Keys() {
		def := cell(k.Default)
		switch {
		case k.Required:
			def = "required"
		case k.Default == "per platform":
			def = k.Default
		}
		flag := ""
		if k.Flag != "" {
			flag = cell("--" + k.Flag)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n",
			cell(k.Name), k.Kind, cell(k.Env), flag, def, strings.ReplaceAll(k.Help, "|", `\|`))
	}
	return b.String()
}

func lookup(name string) (keyDef, bool) {
	for _, d := range keyTable {
		if d.Name == name {
			return d, true
		}
	}
	return keyDef{}, false
}

// layer is where a value came from; a later layer overrides an earlier one.
type layer int

const (
	layerDefault layer = iota
	layerFile
	layerEnv
	layerFlag
)

// origin says which layer set a key, and through what (the file's path, the
// variable, the flag).
type origin struct {
	layer layer
	name  string
}

// describe is the parenthesized note Validate adds to an error about a value
// that did not come from the file.
func (o origin) describe() string {
	switch o.layer {
	case layerEnv:
		return " (from $" + o.name + ")"
	case layerFlag:
		return " (from " + o.name + ")"
	}
	return ""
}

// Set overrides key (as in Keys, e.g. "aws.region") with value from the
// command line: a string is replaced, an integer or a boolean parsed, a list
// gets value appended, a table merges "k=v[,k=v...]". Paths are made
// absolute against the working directory. Setting image.base_ami drops a
// base_owner/base_name filter from an earlier layer (file or environment),
// and setting either of those drops an earlier base_ami, so an override
// replaces the choice of base image as a whole. Set refuses a password.
func (c *Config) Set(key, value string) error {
	name := "--" + key
	if d, ok := lookup(key); ok && d.Flag != "" {
		name = "--" + d.Flag
	}
	return c.set(key, value, origin{layer: layerFlag, name: name})
}

// ApplyEnv applies the LATENTWORKER_* variables of Keys, read with getenv
// (os.Getenv in the program); an empty variable counts as unset. It applies
// every variable it can and returns the errors.Join of those it cannot
// parse, each naming the variable and its key.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	var errs []error
	for _, d := range keyTable {
		if d.Env == "" {
			continue
		}
		if v := getenv(d.Env); v != "" {
			if err := c.set(d.Name, v, origin{layer: layerEnv, name: d.Env}); err != nil {
				errs = append(errs, fmt.Errorf("$%s: %w", d.Env, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) set(key, value string, o origin) error {
	if c.origins == nil {
		c.origins = map[string]origin{}
	}
	d, ok := lookup(key)
	if !ok {
		if last := key[strings.LastIndexByte(key, '.')+1:]; last == "password" || last == "passwd" {
			return fmt.Errorf("%s: %w; %s", key, ErrInlinePassword, passwordHelp)
		}
		return unknownKey(key)
	}
	abs := func(p string) (string, error) {
		if !d.path || p == "" {
			return p, nil
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return a, nil
	}
	switch p := d.field(c).(type) {
	case *string:
		v, err := abs(value)
		if err != nil {
			return err
		}
		*p = v
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("%s = %q: must be a whole number: %w", key, value, err)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(value))
		if err != nil {
			return fmt.Errorf("%s = %q: must be true or false: %w", key, value, err)
		}
		*p = b
	case *[]string:
		v, err := abs(value)
		if err != nil {
			return err
		}
		*p = append(*p, v)
	case *map[string]string:
		tags, err := parsePairs(value)
		if err != nil {
			return fmt.Errorf("%s = %q: %w", key, value, err)
		}
		if *p == nil {
			*p = map[string]string{}
		}
		for k, v := range tags {
			(*p)[k] = v
		}
	default:
		panic("config: key " + key + " has a field of unexpected type")
	}
	// An override of the base image replaces the earlier layer's choice.
	switch key {
	case "image.base_ami":
		if value != "" {
			c.dropBelow(o.layer, "image.base_owner", "image.base_name")
		}
	case "image.base_owner", "image.base_name":
		if value != "" {
			c.dropBelow(o.layer, "image.base_ami")
		}
	}
	c.origins[key] = o
	return nil
}

// dropBelow resets string keys that an earlier layer than l set.
func (c *Config) dropBelow(l layer, keys ...string) {
	for _, k := range keys {
		if o, ok := c.origins[k]; ok && o.layer >= l {
			continue
		}
		d, _ := lookup(k)
		*d.field(c).(*string) = ""
		delete(c.origins, k)
	}
}

// parsePairs parses "k=v[,k=v...]". A value may be empty; a key may not.
// AWS tag values cannot contain commas, so they separate pairs.
func parsePairs(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("want key=value pairs separated by commas, got %q", pair)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m, nil
}

// unknownKey is the error for a key that is not in Keys, with the nearest
// known key when one is close.
func unknownKey(name string) error {
	best, bestDist := "", 3
	for _, known := range append([]string{"worker", "aws", "image"}, keyNames()...) {
		dist := editDistance(name, known)
		// The right key in the wrong section: "aws.platform".
		if strings.Contains(known, ".") && name[strings.LastIndexByte(name, '.')+1:] == known[strings.LastIndexByte(known, '.')+1:] {
			dist = min(dist, 1)
		}
		if dist < bestDist {
			best, bestDist = known, dist
		}
	}
	if best != "" {
		return fmt.Errorf("%w %q (did you mean %q?)", ErrUnknownKey, name, best)
	}
	return fmt.Errorf("%w %q (known keys: %s)", ErrUnknownKey, name, strings.Join(keyNames(), ", "))
}

func keyNames() []string {
	var names []string
	for _, d := range keyTable {
		names = append(names, d.Name)
	}
	return names
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
