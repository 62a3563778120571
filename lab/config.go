// Package lab runs the local EC2 that latentworker is proved in: moto for the
// API, a front endpoint that gives instances a body (systemd-nspawn on
// overlayfs), an image store, and a real buildbot master. `latentlab up`
// starts it as a daemon, `latentlab down` removes every trace of it, even
// after a crash, from the state it keeps on disk.
//
// The product never imports this package; tests and `make demo` use it
// through its endpoint, like any AWS client.
package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/master"
	"github.com/latentworker/latentworker/lab/realism"
)

// Config is the lab file (TOML). Every field has a working default.
type Config struct {
	// Listen is the EC2 endpoint's address (loopback only).
	Listen string `toml:"listen"`
	// Realism makes the endpoint fail and lag as AWS does (throttling,
	// lost answers, eventual consistency, slow boots, late console
	// output); off by default (lab/realism).
	Realism realism.Config `toml:"realism"`
	// Addresses is the loopback range instances get their addresses from.
	Addresses string `toml:"addresses"`
	// AptCache is the loopback address of the lab's caching apt proxy,
	// which instances use for their release's archives; "off" turns it off.
	AptCache string `toml:"apt_cache"`
	// PyPICache is the loopback address of the lab's PyPI mirror, which
	// instances' pip uses (/etc/pip.conf); "off" turns it off.
	PyPICache string `toml:"pypi_cache"`
	// CPythonGit is the loopback address where the lab serves its CPython
	// repository over git's smart HTTP (lab/cpythonsrc: made on first use
	// from Debian's source archive), which the master's CPython builder
	// clones on instances; "off" turns it and the builder off.
	CPythonGit string `toml:"cpython_git"`
	// ImagePending is the least time a new AMI stays pending, so clients'
	// progress reporting is exercised (AWS takes minutes; the lab's copy a
	// fraction of a second).
	ImagePending Duration `toml:"image_pending"`
	// IAMEnforcement turns IAM enforcement on: every request is allowed or
	// denied by the policies of the key that signed it, the lab
	// administrator's by moto, every other key's by the lab's IAM
	// evaluator with conditions and resource ARNs (lab/iameval). The lab
	// then works with the administrator's key, which `latentlab env`
	// exports.
	IAMEnforcement bool `toml:"iam_enforcement"`
	// Images are the releases whose base images `latentlab up` builds
	// before the lab starts (default: debian-12). The catalogue has every
	// release's AMIs either way; launching one whose base is not built
	// builds it then, the instance pending meanwhile.
	Images []string     `toml:"images"`
	Master MasterConfig `toml:"master"`
}

// MasterConfig configures the lab's buildbot master.
type MasterConfig struct {
	Enabled *bool `toml:"enabled"`
	// Buildbot is the master's buildbot: "debian" (the default: Debian's
	// package, 3.7 on bookworm's Python 3.11) or a version such as "4.3.0"
	// (CPython's): installed with pip from PyPI, with buildbot-www and
	// boto3, into a venv on a Debian 13 root filesystem's Python 3.13,
	// both cached in the cache directory.
	Buildbot string         `toml:"buildbot"`
	PBPort   int            `toml:"pb_port"`
	WWWPort  int            `toml:"www_port"`
	Workers  []WorkerConfig `toml:"workers"`
	// Extra is Python appended to master.cfg (e.g. an EC2LatentWorker
	// definition); ExtraWorkers names the workers it defines.
	Extra        string   `toml:"extra"`
	ExtraWorkers []string `toml:"extra_workers"`
	// CPythonTests are the CPython builder's short test run (regrtest
	// names); empty: master.DefaultCPythonTests.
	CPythonTests []string `toml:"cpython_tests"`
}

// WorkerConfig is a worker the master accepts.
type WorkerConfig struct {
	Name         string `toml:"name"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	// ParallelTests is the worker's parallel_tests, as CPython's master
	// declares its workers (and latentworker handoff gives it for the
	// instance type): the CPython builder's make -jN and test -jN; 0
	// leaves it unset, as the fleet does (make without -j, tests -j2).
	ParallelTests int `toml:"parallel_tests"`
}

// Duration is a time.Duration written as "5s" in TOML.
type Duration = realism.Duration

// Defaults.
const (
	DefaultListen     = "127.0.0.1:4570"
	DefaultAddresses  = "127.0.10.0/24"
	DefaultAptCache   = "127.0.0.1:4571"
	DefaultPyPICache  = "127.0.0.1:4572"
	DefaultCPythonGit = "127.0.0.1:4573"
)

// MasterEnabled reports whether the lab runs a buildbot master.
func (c Config) MasterEnabled() bool { return c.Master.Enabled == nil || *c.Master.Enabled }

// LoadConfig reads a lab file; an empty path gives the defaults.
func LoadConfig(path string) (Config, error) {
	var c Config
	if path != "" {
		md, err := toml.DecodeFile(path, &c)
		if err != nil {
			return c, fmt.Errorf("lab file %s: %w", path, err)
		}
		if un := md.Undecoded(); len(un) > 0 {
			keys := make([]string, len(un))
			for i, k := range un {
				keys[i] = k.String()
			}
			return c, fmt.Errorf("lab file %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Addresses == "" {
		c.Addresses = DefaultAddresses
	}
	if c.AptCache == "" {
		c.AptCache = DefaultAptCache
	}
	if c.PyPICache == "" {
		c.PyPICache = DefaultPyPICache
	}
	if c.CPythonGit == "" {
		c.CPythonGit = DefaultCPythonGit
	}
	if c.ImagePending.Duration == 0 {
		c.ImagePending.Duration = 3 * time.Second
	}
	if c.Images == nil {
		c.Images = append([]string(nil), image.DefaultImages...)
	}
	return c, c.validate()
}

func (c Config) validate() error {
	ap, err := netip.ParseAddrPort(c.Listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("lab file: listen %q: must be a loopback address and port, like %s", c.Listen, DefaultListen)
	}
	if c.AptCache != "off" {
		if ap, err := netip.ParseAddrPort(c.AptCache); err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("lab file: apt_cache %q: must be a loopback address and port, like %s, or \"off\"", c.AptCache, DefaultAptCache)
		}
	}
	if c.PyPICache != "off" {
		if ap, err := netip.ParseAddrPort(c.PyPICache); err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("lab file: pypi_cache %q: must be a loopback address and port, like %s, or \"off\"", c.PyPICache, DefaultPyPICache)
		}
	}
	if c.CPythonGit != "off" {
		if ap, err := netip.ParseAddrPort(c.CPythonGit); err != nil || !ap.Addr().IsLoopback() {
			return fmt.Errorf("lab file: cpython_git %q: must be a loopback address and port, like %s, or \"off\"", c.CPythonGit, DefaultCPythonGit)
		}
	}
	p, err := netip.ParsePrefix(c.Addresses)
	if err != nil || !p.Addr().Is4() || !p.Addr().IsLoopback() || p.Bits() < 16 || p.Bits() > 28 {
		return fmt.Errorf("lab file: addresses %q: must be an IPv4 loopback range from /16 to /28, like %s", c.Addresses, DefaultAddresses)
	}
	if b := c.Master.Buildbot; b != "" && b != "debian" && !master.PipVersionRE.MatchString(b) {
		return fmt.Errorf("lab file: master.buildbot %q: must be \"debian\" or a buildbot version from PyPI such as \"4.3.0\"", b)
	}
	for i, name := range c.Images {
		if _, err := image.Lookup(name); err != nil {
			return fmt.Errorf("lab file: images[%d]: %q: the lab can boot %s", i, name, strings.Join(image.Names(), ", "))
		}
	}
	for i, w := range c.Master.Workers {
		if w.Name == "" {
			return fmt.Errorf("lab file: master.workers[%d].name is empty", i)
		}
		if (w.Password == "") == (w.PasswordFile == "") {
			return fmt.Errorf("lab file: master.workers[%d] (%s): set exactly one of password and password_file", i, w.Name)
		}
	}
	return c.Realism.Validate()
}

// masterWorkers resolves worker passwords.
func (c Config) masterWorkers() ([]master.Worker, error) {
	var out []master.Worker
	for _, w := range c.Master.Workers {
		pw := w.Password
		if w.PasswordFile != "" {
			b, err := os.ReadFile(w.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("lab file: worker %s: password_file: %w", w.Name, err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
			if pw == "" {
				return nil, errors.New("lab file: worker " + w.Name + ": password_file is empty")
			}
		}
		if w.ParallelTests < 0 || w.ParallelTests > 1024 {
			return nil, fmt.Errorf("lab file: worker %s: parallel_tests %d: must be 0 (unset) to 1024", w.Name, w.ParallelTests)
		}
		out = append(out, master.Worker{Name: w.Name, Password: pw, ParallelTests: w.ParallelTests})
	}
	return out, nil
}
