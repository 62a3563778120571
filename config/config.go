package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"unicode"

	"github.com/BurntSushi/toml"

	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// DefaultFile is the file name "latentworker init" writes and the command
// line reads when no other path is given.
const DefaultFile = "latentworker.toml"

// Defaults of the keys that have one.
const (
	DefaultMaster       = "buildbot-api.python.org:9020"
	DefaultPasswordEnv  = "LATENTWORKER_PASSWORD"
	DefaultInstanceType = "t3.large"
	DefaultPlatform     = platform.Default
	DefaultNamePrefix   = "latentworker"
)

// The values of aws.ssh_address.
const (
	SSHPublic  = "public"
	SSHPrivate = "private"
)

// Root volume limits, in GiB: the buildbot guide asks for 30 GB of free disk;
// 16384 is the gp3 maximum.
const (
	MinRootVolumeGiB = 30
	MaxRootVolumeGiB = 16384
)

// Config is a complete latentworker configuration. Its zero value is not
// useful: start from Default or Load. After Load, ApplyEnv and Set, every
// path in it (worker.password_file, image.extra_scripts) is absolute.
type Config struct {
	Worker Worker `toml:"worker"`
	AWS    AWS    `toml:"aws"`
	Image  Image  `toml:"image"`

	// origins records, per key, which layer set it last (see layer).
	origins map[string]origin
}

// Worker is the [worker] section: the buildbot worker baked into the image.
// The password is not here: see Config.Password.
type Worker struct {
	// Name is the worker name the buildmaster admins gave you (required).
	Name string `toml:"name"`
	// Master is the buildmaster's host:port (default DefaultMaster).
	Master string `toml:"master"`
	// AdminName is the contact name written to info/admin (required).
	AdminName string `toml:"admin_name"`
	// AdminEmail is the contact address written to info/admin, obfuscated
	// as "user AT example.com" because that file is public (required).
	AdminEmail string `toml:"admin_email"`
	// HostInfo is the text of info/host; "" means DefaultHostInfo of the
	// base image's OS and the instance type.
	HostInfo string `toml:"host_info"`
	// PasswordEnv names the environment variable holding the worker
	// password (default DefaultPasswordEnv); "" disables it.
	PasswordEnv string `toml:"password_env"`
	// PasswordFile is a file holding the password on its one line, mode
	// 0600 or stricter; relative to the config file. "" for none.
	PasswordFile string `toml:"password_file"`
}

// AWS is the [aws] section: where and how the builder instance runs.
type AWS struct {
	// Region is the AWS region; "" leaves it to the SDK (AWS_REGION,
	// AWS_DEFAULT_REGION, the profile).
	Region string `toml:"region"`
	// InstanceType is the builder's type, family.size (default
	// DefaultInstanceType). Tell the buildmaster admins the type to run.
	InstanceType string `toml:"instance_type"`
	// SubnetID is the subnet to launch in; "" is the default VPC (a
	// default subnet in a zone that offers the instance type). Required
	// where the region has no default VPC.
	SubnetID string `toml:"subnet_id"`
	// AssociatePublicIP asks for a public IPv4 address on the builder
	// whatever the subnet maps (a subnet that is not a default VPC's gives
	// none by default).
	AssociatePublicIP bool `toml:"associate_public_ip"`
	// SSHAddress is the builder's address bake connects to: "public" (the
	// default: its public IPv4, or its IPv6 address when SSHCIDR is IPv6)
	// or "private" (its private IPv4: a runner inside the VPC, a VPN, a
	// bastion).
	SSHAddress string `toml:"ssh_address"`
	// HostID is the dedicated host to launch on (h- and 17 hex digits);
	// required by platforms whose instances run only on one (mac).
	HostID string `toml:"host_id"`
	// SSHCIDR is who may reach the builder over SSH; "" means the caller's
	// public address as a /32, which the caller resolves.
	SSHCIDR string `toml:"ssh_cidr"`
	// Tags are extra tags on everything latentworker creates.
	Tags map[string]string `toml:"tags"`
	// CopyToRegions are the regions bake copies the verified AMI to, each
	// tagged as the original; not the bake's own region.
	CopyToRegions []string `toml:"copy_to_regions"`
}

// Image is the [image] section: what the AMI is made from and called.
type Image struct {
	// Platform names the base image's OS release: a name or alias in
	// package platform's registry (platform.Names()).
	Platform string `toml:"platform"`
	// BaseAMI is the base image's ID; when set, BaseOwner and BaseName are
	// not used.
	BaseAMI string `toml:"base_ami"`
	// BaseOwner is the owner of the base image for the filter (newest image
	// matching BaseName wins); "" means the platform's publisher.
	BaseOwner string `toml:"base_owner"`
	// BaseName is the name pattern of the base image ('*' and '?'
	// wildcards); "" means the platform's current release.
	BaseName string `toml:"base_name"`
	// RootVolumeGiB is the root volume size, MinRootVolumeGiB or more.
	RootVolumeGiB int `toml:"root_volume_gib"`
	// SSHUser is the login user of the base image; "" is the platform's.
	SSHUser string `toml:"ssh_user"`
	// Install is how buildbot-worker is installed: "" (the platform's way),
	// "package" or "pip" (the guide's fallback: a virtual environment, the
	// system user and unit made by hand).
	Install string `toml:"install"`
	// WorkerVersion pins the buildbot-worker pip installs; "" is the newest.
	WorkerVersion string `toml:"worker_version"`
	// CPythonBuildDeps installs what CPython's build and test suite need
	// (the platform's platform.BuildDeps); true by default, false keeps a
	// bare worker for other masters.
	CPythonBuildDeps bool `toml:"cpython_build_deps"`
	// ExtraPackages are installed with the platform's package manager
	// after the worker is set up, with the build dependencies; each must
	// exist in the release.
	ExtraPackages []string `toml:"extra_packages"`
	// ExtraScripts run as root, in order, after the worker is set up;
	// relative to the config file.
	ExtraScripts []string `toml:"extra_scripts"`
	// NamePrefix starts the AMI names: PREFIX-WORKER-YYYYMMDD-hhmmss.
	NamePrefix string `toml:"name_prefix"`
	// Encrypted bakes an encrypted root volume, so that the AMI's snapshot
	// (and its copies') are encrypted.
	Encrypted bool `toml:"encrypted"`
	// KMSKeyID is the KMS key (ID, ARN or alias/NAME) of the bake's region
	// that encrypts the root volume; "" is the region's default EBS key.
	// Setting it implies Encrypted. Copies use the same key when it is an
	// alias (an alias of that name in each copy region), else each
	// region's default EBS key.
	KMSKeyID string `toml:"kms_key_id"`
}

// IsEncrypted reports whether the root volume is encrypted: image.encrypted
// or a KMS key given.
func (i Image) IsEncrypted() bool { return i.Encrypted || i.KMSKeyID != "" }

// Default returns the configuration before any file, environment or flag:
// every key with a default set to it, the required ones empty.
func Default() *Config {
	return &Config{
		Worker: Worker{
			Master:      DefaultMaster,
			PasswordEnv: DefaultPasswordEnv,
		},
		AWS: AWS{
			InstanceType: DefaultInstanceType,
			SSHAddress:   SSHPublic,
			Tags:         map[string]string{},
		},
		Image: Image{
			Platform:         DefaultPlatform,
			RootVolumeGiB:    MinRootVolumeGiB,
			NamePrefix:       DefaultNamePrefix,
			CPythonBuildDeps: true,
		},
		origins: map[string]origin{},
	}
}

// Errors Load, Set and ApplyEnv return (wrapped).
var (
	// ErrUnknownKey: a key that is not in Keys.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInlinePassword: a password given in the file or as a flag value.
	ErrInlinePassword = errors.New("the worker password is never kept in the config file or given as a flag value")
)

// passwordHelp says where the password goes instead.
const passwordHelp = "set it in the environment variable named by worker.password_env (default " +
	DefaultPasswordEnv + "), in a 0600 file named by worker.password_file, or let latentworker prompt for it"

// passwordLine matches a line that assigns a password-like key, quoted or
// dotted ("password =", "worker.password =", "\"passwd\" =").
var passwordLine = regexp.MustCompile(`^\s*(?:[A-Za-z0-9_"'-]+\s*\.\s*)*["']?(password|passwd)["']?\s*=`)

// tableLine matches a [table] or [[array]] header, capturing its name.
var tableLine = regexp.MustCompile(`^\s*\[\[?\s*([^\]]+?)\s*\]\]?`)

// Load reads the TOML file at path over Default. Unknown keys are errors
// that name the key (with a suggestion when one is close), and so is a
// password key: the password never lives in the file, and its value is never
// echoed in the error. Relative paths in the file are made relative to the
// file's directory. Load does not validate: call Validate after the
// environment and flag overrides.
func Load(path string) (*Config, error) {
	data, err := readSmallFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	if err := checkNoPassword(data); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	c := Default()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	if err := checkUndecoded(md.Undecoded()); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	if err := checkTypes(md); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	if c.AWS.Tags == nil {
		c.AWS.Tags = map[string]string{}
	}
	if len(c.Image.ExtraScripts) == 0 {
		c.Image.ExtraScripts = nil
	}
	if len(c.Image.ExtraPackages) == 0 {
		c.Image.ExtraPackages = nil
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	for _, k := range md.Keys() {
		if len(k) == 2 {
			c.origins[k.String()] = origin{layer: layerFile, name: path}
		}
	}
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.Worker.PasswordFile = resolve(c.Worker.PasswordFile)
	for i, p := range c.Image.ExtraScripts {
		c.Image.ExtraScripts[i] = resolve(p)
	}
	return c, nil
}

// MaxFileSize bounds the config file and the password file: both are a
// few lines, and reading something else (a device, a log) must fail at once.
const MaxFileSize = 1 << 20

// readSmallFile reads path, which must be a regular file of at most limit
// bytes: a FIFO, a device or a directory is refused before it is opened
// for reading (a FIFO would block, /dev/zero would never end).
func readSmallFile(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: must be a regular file, not %s", path, fileKind(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: is %d bytes; at most %d are allowed", path, fi.Size(), limit)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return b, nil
}

// fileKind names a file mode's type for an error.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

// checkTypes refuses a value of the wrong TOML type, which the decoder
// would otherwise drop silently for tables (aws.tags = "team=x").
func checkTypes(md toml.MetaData) error {
	want := map[Kind][]string{
		KindString: {"String"},
		KindInt:    {"Integer"},
		KindBool:   {"Bool"},
		KindList:   {"Array"},
		KindTable:  {"Hash", "Inline Table"},
	}
	var errs []error
	for _, k := range Keys() {
		parts := strings.Split(k.Name, ".")
		if !md.IsDefined(parts...) {
			continue
		}
		got := md.Type(parts...)
		if !slices.Contains(want[k.Kind], got) {
			errs = append(errs, &FieldError{Field: k.Name, Value: "(a TOML " + strings.ToLower(got) + ")", Rule: "must be a " + string(k.Kind) + tomlExample(k.Kind)})
		}
	}
	return errors.Join(errs...)
}

func tomlExample(k Kind) string {
	switch k {
	case KindTable:
		return `, e.g. { team = "x" }`
	case KindList:
		return `, e.g. ["a.sh", "b.sh"]`
	case KindString:
		return ` in quotes`
	}
	return ""
}

// checkNoPassword refuses a file with a line that sets a password-like key
// before it is parsed, so that no parse error can quote the value.
func checkNoPassword(data []byte) error {
	table := ""
	for i, line := range bytes.Split(data, []byte("\n")) {
		if m := tableLine.FindSubmatch(line); m != nil {
			table = string(m[1]) + "."
			continue
		}
		if m := passwordLine.FindSubmatch(line); m != nil {
			return fmt.Errorf("line %d: %s%s: %w (the file is shared, copied and committed); %s",
				i+1, table, m[1], ErrInlinePassword, passwordHelp)
		}
	}
	return nil
}

// checkUndecoded reports the keys the file has and Config does not.
func checkUndecoded(keys []toml.Key) error {
	var errs []error
	var reported []string
	for _, k := range keys {
		name := k.String()
		covered := false
		for _, r := range reported {
			if strings.HasPrefix(name, r+".") {
				covered = true
			}
		}
		if covered {
			continue
		}
		reported = append(reported, name)
		if last := k[len(k)-1]; last == "password" || last == "passwd" {
			errs = append(errs, fmt.Errorf("%s: %w; %s", name, ErrInlinePassword, passwordHelp))
			continue
		}
		errs = append(errs, unknownKey(name))
	}
	return errors.Join(errs...)
}

// PlatformInfo returns the registry entry of Platform, or an error
// listing the known platforms.
// With Install = "pip" it is the platform installed the guide's pip way
// (platform.Platform.WithPip).
func (i Image) PlatformInfo() (*platform.Platform, error) {
	p, err := platform.Lookup(i.Platform)
	if err != nil {
		return nil, err
	}
	if i.Install == string(platform.Pip) {
		p = p.WithPip()
	}
	return p, nil
}

// EffectiveBase returns the base image filter with the platform's defaults
// filled in for an empty BaseOwner or BaseName. It is meaningless when
// BaseAMI is set.
func (i Image) EffectiveBase() (owner, namePattern string) {
	if p, err := i.PlatformInfo(); err == nil {
		owner, namePattern = p.BaseOwner, p.BaseName
	}
	if i.BaseOwner != "" {
		owner = i.BaseOwner
	}
	if i.BaseName != "" {
		namePattern = i.BaseName
	}
	return owner, namePattern
}

// EffectiveSSHUser returns SSHUser, or the platform's login user when it is
// empty.
func (i Image) EffectiveSSHUser() string {
	if i.SSHUser != "" {
		return i.SSHUser
	}
	if p, err := i.PlatformInfo(); err == nil {
		return p.SSHUser
	}
	return ""
}

// DefaultHostInfo renders the info/host text used when worker.host_info is
// empty, from the base image's OS (PRETTY_NAME of /etc/os-release, e.g.
// "Debian GNU/Linux 12 (bookworm)") and the instance type:
//
//	Debian GNU/Linux 12 (bookworm) on an AWS EC2 t3.large (latent worker)
//
// Control characters in osName become spaces and it is cut to 200
// characters; an empty osName reads "Linux". The result always passes
// scripts.Worker.Validate when instanceType is valid.
func DefaultHostInfo(osName, instanceType string) string {
	osName = strings.Join(strings.FieldsFunc(osName, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r)
	}), " ")
	if r := []rune(osName); len(r) > 200 {
		osName = strings.TrimSpace(string(r[:200]))
	}
	if osName == "" {
		osName = "Linux"
	}
	return osName + " on an AWS EC2 " + instanceType + " (latent worker)"
}

// ScriptWorker returns the worker that package scripts renders and checks:
// the [worker] fields, with info/host from DefaultHostInfo(osName,
// aws.instance_type) when worker.host_info is empty.
func (c *Config) ScriptWorker(osName string) scripts.Worker {
	host := c.Worker.HostInfo
	if host == "" {
		host = DefaultHostInfo(osName, c.AWS.InstanceType)
	}
	return scripts.Worker{
		Name:       c.Worker.Name,
		Master:     c.Worker.Master,
		AdminName:  c.Worker.AdminName,
		AdminEmail: c.Worker.AdminEmail,
		HostInfo:   host,
		Version:    c.Image.WorkerVersion,
	}
}
