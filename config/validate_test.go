package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/field"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	script := writeFile(t, dir, "extra.sh", "#!/bin/sh\ntrue\n", 0o644)
	pwOK := writeFile(t, dir, "pw-ok", "pw\n", 0o600)
	pwRO := writeFile(t, dir, "pw-ro", "pw\n", 0o400)
	pwOpen := writeFile(t, dir, "pw-open", "pw\n", 0o644)
	pwGroup := writeFile(t, dir, "pw-group", "pw\n", 0o640)
	long := func(n int) string { return strings.Repeat("a", n) }

	for _, tc := range []struct {
		desc string
		mod  func(*Config)
		keys []string // keys Validate must name, in order; nil = valid
		rule string   // a substring of the first error, if set
	}{
		{"valid", func(*Config) {}, nil, ""},
		{"everything set", func(c *Config) {
			c.Worker.HostInfo = "Debian 12 on EC2"
			c.Worker.PasswordFile = pwOK
			c.AWS.Region = "us-gov-west-1"
			c.AWS.InstanceType = "m7i-flex.2xlarge"
			c.AWS.SubnetID = "subnet-0123456789abcdef0"
			c.AWS.SSHCIDR = "2001:db8::/48"
			c.AWS.Tags = map[string]string{"team": "py", "Cost Center": "a/b:c=d+e-f@g_h.i", "empty": ""}
			c.Image.Platform = "ubuntu"
			c.Image.BaseAMI = "ami-12345678"
			c.Image.RootVolumeGiB = MaxRootVolumeGiB
			c.Image.SSHUser = "ec2-user"
			c.Image.ExtraScripts = []string{script, script}
			c.Image.NamePrefix = "cpython.w_1-x"
		}, nil, ""},
		{"filter set", func(c *Config) { c.Image.BaseOwner = "aws-marketplace"; c.Image.BaseName = "my image (v1) [x] 1.0/*?" }, nil, ""},
		{"password file 0400", func(c *Config) { c.Worker.PasswordFile = pwRO }, nil, ""},
		{"metal size", func(c *Config) { c.AWS.InstanceType = "c7i.metal-24xl" }, nil, ""},
		{"cn region", func(c *Config) { c.AWS.Region = "cn-northwest-1" }, nil, ""},
		{"ssh /32", func(c *Config) { c.AWS.SSHCIDR = "203.0.113.7/32" }, nil, ""},
		{"macos on a host", func(c *Config) { c.Image.Platform = "macos"; c.AWS.HostID = "h-0123456789abcdef0" }, nil, ""},
		{"linux on a host", func(c *Config) { c.AWS.HostID = "h-0123456789abcdef0" }, nil, ""},
		{"password_env empty", func(c *Config) { c.Worker.PasswordEnv = "" }, nil, ""},
		{"40 tags", func(c *Config) {
			for i := range MaxTags {
				c.AWS.Tags[long(i+1)] = "v"
			}
		}, nil, ""},

		{"everything wrong", func(c *Config) {
			*c = Config{}
			c.AWS.Tags = map[string]string{"aws:x": "v"}
			c.Image.ExtraScripts = []string{filepath.Join(dir, "missing.sh")}
		}, []string{
			"worker.name", "worker.master", "worker.admin_name", "worker.admin_email",
			"aws.instance_type", `aws.tags."aws:x"`, "image.platform", "image.root_volume_gib",
			"image.extra_scripts[0]", "image.name_prefix",
		}, ""},
		{"worker name", func(c *Config) { c.Worker.Name = "a b" }, []string{"worker.name"}, "letters, digits"},
		{"master", func(c *Config) { c.Worker.Master = "http://m.example:1" }, []string{"worker.master"}, "host:port"},
		{"admin email", func(c *Config) { c.Worker.AdminEmail = "jane" }, []string{"worker.admin_email"}, "user@example.com"},
		{"host info", func(c *Config) { c.Worker.HostInfo = "a\nb" }, []string{"worker.host_info"}, "printable"},
		{"password_env", func(c *Config) { c.Worker.PasswordEnv = "1PW" }, []string{"worker.password_env"}, "environment variable name"},
		{"password file 0644", func(c *Config) { c.Worker.PasswordFile = pwOpen }, []string{"worker.password_file"}, "0600 or stricter: it is 0644 (chmod 600"},
		{"password file 0640", func(c *Config) { c.Worker.PasswordFile = pwGroup }, []string{"worker.password_file"}, "0600 or stricter"},
		{"password file missing", func(c *Config) { c.Worker.PasswordFile = filepath.Join(dir, "nope") }, []string{"worker.password_file"}, "does not exist"},
		{"password file dir", func(c *Config) { c.Worker.PasswordFile = dir }, []string{"worker.password_file"}, "regular file"},
		{"region", func(c *Config) { c.AWS.Region = "US-EAST-1" }, []string{"aws.region"}, "us-east-1"},
		{"region az", func(c *Config) { c.AWS.Region = "us-east-1a" }, []string{"aws.region"}, ""},
		{"instance type no size", func(c *Config) { c.AWS.InstanceType = "t3" }, []string{"aws.instance_type"}, "family.size"},
		{"instance type upper", func(c *Config) { c.AWS.InstanceType = "T3.large" }, []string{"aws.instance_type"}, ""},
		{"instance type empty", func(c *Config) { c.AWS.InstanceType = "" }, []string{"aws.instance_type"}, ""},
		{"subnet", func(c *Config) { c.AWS.SubnetID = "subnet-123" }, []string{"aws.subnet_id"}, "8 or 17 hex"},
		{"subnet upper hex", func(c *Config) { c.AWS.SubnetID = "subnet-ABCDEF12" }, []string{"aws.subnet_id"}, ""},
		{"host id", func(c *Config) { c.AWS.HostID = "h-123" }, []string{"aws.host_id"}, "h- and 17 hex digits"},
		{"host id upper", func(c *Config) { c.AWS.HostID = "h-0123456789ABCDEF0" }, []string{"aws.host_id"}, ""},
		{"macos without host", func(c *Config) { c.Image.Platform = "macos" }, []string{"aws.host_id"}, "mac host for at least 24 hours"},
		{"cidr garbage", func(c *Config) { c.AWS.SSHCIDR = "my office" }, []string{"aws.ssh_cidr"}, "203.0.113.7/32"},
		{"cidr bare address", func(c *Config) { c.AWS.SSHCIDR = "203.0.113.7" }, []string{"aws.ssh_cidr"}, ""},
		{"cidr host bits", func(c *Config) { c.AWS.SSHCIDR = "203.0.113.7/24" }, []string{"aws.ssh_cidr"}, "203.0.113.0/24"},
		{"cidr world", func(c *Config) { c.AWS.SSHCIDR = "0.0.0.0/0" }, []string{"aws.ssh_cidr"}, "whole internet"},
		{"cidr world v6", func(c *Config) { c.AWS.SSHCIDR = "::/0" }, []string{"aws.ssh_cidr"}, "whole internet"},
		{"tag aws:", func(c *Config) { c.AWS.Tags["AWS:cloudformation"] = "x" }, []string{`aws.tags."AWS:cloudformation"`}, "aws:"},
		{"tag reserved", func(c *Config) { c.AWS.Tags["latentworker:run"] = "x" }, []string{`aws.tags."latentworker:run"`}, ReservedTagPrefix},
		{"tag key long", func(c *Config) { c.AWS.Tags[long(129)] = "x" }, []string{"aws.tags." + long(129)}, "1-128"},
		{"tag key empty", func(c *Config) { c.AWS.Tags[""] = "x" }, []string{`aws.tags.""`}, "1-128"},
		{"tag key chars", func(c *Config) { c.AWS.Tags["a,b"] = "x" }, []string{`aws.tags."a,b"`}, "tag key must be letters"},
		{"tag value chars", func(c *Config) { c.AWS.Tags["k"] = "a;b" }, []string{"aws.tags.k"}, "tag value"},
		{"tag value long", func(c *Config) { c.AWS.Tags["k"] = long(257) }, []string{"aws.tags.k"}, "at most 256"},
		{"41 tags", func(c *Config) {
			for i := range MaxTags + 1 {
				c.AWS.Tags[long(i+1)] = "v"
			}
		}, []string{"aws.tags"}, "at most 40"},
		{"platform", func(c *Config) { c.Image.Platform = "fedora-41" }, []string{"image.platform"}, "debian-12, debian, debian-13"},
		{"install", func(c *Config) { c.Image.Install = "apt" }, []string{"image.install"}, "package or pip"},
		{"install package without one", func(c *Config) { c.Image.Platform = "amazonlinux-2023"; c.Image.Install = "package" }, []string{"image.install"}, "no buildbot-worker package"},
		{"install pip on NixOS", func(c *Config) { c.Image.Platform = "nixos"; c.Image.Install = "pip" }, []string{"image.install"}, "services.buildbot-worker module"},
		{"arch without a base image", func(c *Config) { c.Image.Platform = "arch" }, []string{"image.base_ami", "image.ssh_user"}, "no official AMI"},
		{"worker version", func(c *Config) { c.Image.Install = "pip"; c.Image.WorkerVersion = "4.3; reboot" }, []string{"image.worker_version"}, "4.3.0"},
		{"worker version with a package", func(c *Config) { c.Image.WorkerVersion = "4.3.0" }, []string{"image.worker_version"}, "image.install = \"pip\""},
		{"ami", func(c *Config) { c.Image.BaseAMI = "ami-123456789" }, []string{"image.base_ami"}, "8 or 17 hex"},
		{"ami and filter", func(c *Config) { c.Image.BaseAMI = "ami-12345678"; c.Image.BaseName = "x-*" }, []string{"image.base_ami"}, "not both"},
		{"owner", func(c *Config) { c.Image.BaseOwner = "debian" }, []string{"image.base_owner"}, "12-digit"},
		{"base name chars", func(c *Config) { c.Image.BaseName = "a;b" }, []string{"image.base_name"}, "wildcards"},
		{"base name long", func(c *Config) { c.Image.BaseName = long(129) }, []string{"image.base_name"}, ""},
		{"root 29", func(c *Config) { c.Image.RootVolumeGiB = 29 }, []string{"image.root_volume_gib"}, "30 to 16384"},
		{"root too big", func(c *Config) { c.Image.RootVolumeGiB = MaxRootVolumeGiB + 1 }, []string{"image.root_volume_gib"}, ""},
		{"ssh user", func(c *Config) { c.Image.SSHUser = "Admin" }, []string{"image.ssh_user"}, "login name"},
		{"extra script missing", func(c *Config) { c.Image.ExtraScripts = []string{script, filepath.Join(dir, "x.sh")} }, []string{"image.extra_scripts[1]"}, "does not exist"},
		{"extra script dir", func(c *Config) { c.Image.ExtraScripts = []string{dir} }, []string{"image.extra_scripts[0]"}, "regular file"},
		{"extra package option", func(c *Config) { c.Image.ExtraPackages = []string{"cmake", "-o"} }, []string{"image.extra_packages[1]"}, "package name"},
		{"extra package shell", func(c *Config) { c.Image.ExtraPackages = []string{"a;reboot"} }, []string{"image.extra_packages[0]"}, "package name"},
		{"extra package windows", func(c *Config) { c.Image.Platform = "windows-2025"; c.Image.ExtraPackages = []string{"git"} }, []string{"image.extra_packages"}, "no package manager"},
		{"name prefix dash", func(c *Config) { c.Image.NamePrefix = "lw-" }, []string{"image.name_prefix"}, "1-32"},
		{"name prefix long", func(c *Config) { c.Image.NamePrefix = long(33) }, []string{"image.name_prefix"}, ""},
		{"name prefix empty", func(c *Config) { c.Image.NamePrefix = "" }, []string{"image.name_prefix"}, ""},
		{"copy region unknown", func(c *Config) { c.AWS.CopyToRegions = []string{"us-west-2", "us-wset-2"} }, []string{"aws.copy_to_regions[1]"}, "AWS region name"},
		{"copy region twice", func(c *Config) { c.AWS.CopyToRegions = []string{"eu-west-1", "eu-west-1"} }, []string{"aws.copy_to_regions[1]"}, "twice"},
		{"copy region partition", func(c *Config) { c.AWS.Region = "us-east-1"; c.AWS.CopyToRegions = []string{"cn-north-1"} }, []string{"aws.copy_to_regions[0]"}, "partition"},
		{"kms key", func(c *Config) { c.Image.KMSKeyID = "my key" }, []string{"image.kms_key_id"}, "alias/NAME"},
		{"kms key other region", func(c *Config) {
			c.AWS.Region = "us-east-1"
			c.Image.KMSKeyID = "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		}, []string{"image.kms_key_id"}, "not of aws.region"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := valid()
			tc.mod(c)
			err := c.Validate()
			keys, other := fieldKeys(err)
			if other != nil {
				t.Errorf("Validate() returned errors that are not *FieldError: %v", other)
			}
			if !slices.Equal(keys, tc.keys) {
				t.Fatalf("Validate() = %v\nnames %q; want %q", err, keys, tc.keys)
			}
			for i, e := range unjoin(err) {
				if !strings.HasPrefix(e.Error(), tc.keys[i]+" = ") {
					t.Errorf("error %d = %q; want it to start with %q", i, e, tc.keys[i]+" = ")
				}
			}
			if tc.rule != "" && !strings.Contains(unjoin(err)[0].Error(), tc.rule) {
				t.Errorf("Validate() = %v; want it to contain %q", err, tc.rule)
			}
		})
	}
}

func TestValidateUnwrapsAndRules(t *testing.T) {
	c := valid()
	c.Worker.Name = "-bad"
	c.Worker.PasswordFile = filepath.Join(t.TempDir(), "nope")
	err := c.Validate()
	// One field-error type: the config key's, wrapping the Worker field's.
	var names []string
	for _, fe := range field.All(err) {
		names = append(names, fe.Field)
		if inner := field.All(fe.Err); len(inner) > 0 {
			names = append(names, inner[0].Field)
		}
	}
	if !slices.Contains(names, "worker.name") || !slices.Contains(names, "Name") {
		t.Errorf("Validate() = %v: fields %v; want worker.name wrapping the Worker field Name", err, names)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Validate() = %v; want it to wrap ErrNotExist for the password file", err)
	}
	want := `worker.name = "-bad": must be a worker name buildbot accepts: 1-50 letters, digits, '_' or '-', starting with a letter or '_', not debug, change or status`
	if got := unjoin(err)[0].Error(); got != want {
		t.Errorf("Validate()[0] = %q; want %q", got, want)
	}
}

func TestValidateNamesTheOrigin(t *testing.T) {
	c := valid()
	if err := c.ApplyEnv(mapEnv{"LATENTWORKER_REGION": "moon-1"}.get); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("aws.instance_type", "huge"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("aws.tags", "aws:x=1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`aws.region = "moon-1" (from $LATENTWORKER_REGION): must be`,
		`aws.instance_type = "huge" (from --instance-type): must be`,
		`aws.tags."aws:x" = "aws:x" (from --tag): tag key must not start with aws:`,
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to contain %q", err, want)
		}
	}
}

func TestCheckCopyRegions(t *testing.T) {
	c := Default()
	c.AWS.CopyToRegions = []string{"us-west-2", "us-east-1"}
	err := c.CheckCopyRegions("us-east-1")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "aws.copy_to_regions[1]" || !strings.Contains(err.Error(), "baked in") {
		t.Errorf("CheckCopyRegions(own region) = %v; want a field error naming aws.copy_to_regions[1]", err)
	}
	if err := c.CheckCopyRegions("eu-west-1"); err != nil {
		t.Errorf("CheckCopyRegions(other) = %v", err)
	}
}
