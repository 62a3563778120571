package master

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Defaults applied by Render and Start when the corresponding Config field
// is empty.
const (
	DefaultHost          = "127.0.0.1"
	DefaultBuilderName   = "lab-builder"
	DefaultSchedulerName = "force"
)

// ErrInvalidConfig is wrapped by every error Render and Start return for a
// Config that cannot be rendered.
var ErrInvalidConfig = errors.New("invalid master config")

// identRE is buildbot's identifier rule (buildbot.util.identifiers.ident_re)
// restricted to ASCII: buildbot checks worker and ForceScheduler names
// against it, and such names also appear in REST API paths.
var identRE = regexp.MustCompile(`^[A-Za-z_-][A-Za-z0-9_-]*$`)

// secretNameRE is what a secret's file name may be.
var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*$`)

// testNameRE is what a regrtest test name looks like.
var testNameRE = regexp.MustCompile(`^test_[A-Za-z0-9_]+(\.test_[A-Za-z0-9_]+)*$`)

// maxWorkerName is buildbot's limit on worker names.
const maxWorkerName = 50

// reservedWorkerNames are refused by buildbot's config loader.
var reservedWorkerNames = map[string]bool{"debug": true, "change": true, "status": true}

// withDefaults returns cfg with empty fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.BuilderName == "" {
		cfg.BuilderName = DefaultBuilderName
	}
	if cfg.SchedulerName == "" {
		cfg.SchedulerName = DefaultSchedulerName
	}
	return cfg
}

// validate checks everything Render needs except the ports, which Start may
// still have to pick. cfg must already have its defaults applied.
func (cfg Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if ip := net.ParseIP(cfg.Host); ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		bad("host %q is not an IPv4 loopback address", cfg.Host)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"PB port", cfg.PBPort}, {"WWW port", cfg.WWWPort}} {
		if p.port < 0 || p.port > 65535 {
			bad("%s %d out of range", p.name, p.port)
		}
	}
	if cfg.PBPort != 0 && cfg.PBPort == cfg.WWWPort {
		bad("PB port and WWW port are both %d", cfg.PBPort)
	}
	seen := map[string]bool{}
	checkWorkerName := func(name string) {
		switch {
		case !identRE.MatchString(name):
			bad("worker name %q is not an identifier (letters, digits, '_', '-'; not starting with a digit)", name)
		case len(name) > maxWorkerName:
			bad("worker name %q is longer than %d characters", name, maxWorkerName)
		case reservedWorkerNames[name]:
			bad("worker name %q is reserved by buildbot", name)
		case seen[name]:
			bad("worker name %q is used twice", name)
		}
		seen[name] = true
	}
	for _, w := range cfg.Workers {
		checkWorkerName(w.Name)
		if w.Password == "" {
			bad("worker %q has an empty password", w.Name)
		} else if !utf8.ValidString(w.Password) {
			// Deliberately not quoting the password itself.
			bad("worker %q has a password that is not valid UTF-8", w.Name)
		}
	}
	for _, name := range cfg.ExtraWorkerNames {
		checkWorkerName(name)
	}
	if len(cfg.Workers)+len(cfg.ExtraWorkerNames) == 0 {
		bad("no workers: the builder needs at least one worker")
	}
	if !identRE.MatchString(cfg.SchedulerName) {
		bad("scheduler name %q is not an identifier", cfg.SchedulerName)
	}
	if !printableASCII(cfg.BuilderName) || strings.HasPrefix(cfg.BuilderName, "_") {
		bad("builder name %q must be printable ASCII and not start with '_'", cfg.BuilderName)
	}
	if cfg.AWSEndpoint != "" {
		u, err := url.Parse(cfg.AWSEndpoint)
		var ip net.IP
		if err == nil {
			ip = net.ParseIP(u.Hostname())
		}
		if err != nil || u.Scheme != "http" || ip == nil || !ip.IsLoopback() || u.Path != "" && u.Path != "/" {
			bad("AWS endpoint %q is not an http URL on a loopback address", cfg.AWSEndpoint)
		}
	}
	if cp := cfg.CPython; cp != nil {
		if cp.Repo == "" || cp.Branch == "" || !printableASCII(cp.Repo) || !printableASCII(cp.Branch) {
			bad("CPython builder: repository %q and branch %q must be set, printable ASCII", cp.Repo, cp.Branch)
		}
		for _, test := range cp.Tests {
			if !testNameRE.MatchString(test) {
				bad("CPython builder: test %q is not a regrtest name (test_x, test_x.test_y)", test)
			}
		}
	}
	for name := range cfg.Secrets {
		if !secretNameRE.MatchString(name) {
			bad("secret name %q is not a file name (letters, digits, '.', '_', '-')", name)
		}
	}
	if !utf8.ValidString(cfg.Extra) {
		bad("extra config is not valid UTF-8")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

func printableASCII(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// pyStr renders s as a Python 3 string literal. A JSON string is a valid
// Python string literal (every JSON escape means the same in Python), and
// the caller has checked that s is valid UTF-8, so nothing is replaced.
func pyStr(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		// Encoding a string cannot fail.
		panic(fmt.Sprintf("encode string literal: %v", err))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// pyStrList renders names as a Python list of string literals.
func pyStrList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pyStr(n)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// cpythonFactory is the CPython builder's factory (Python), inserted into
// master.cfg when the master has the builder.
//
//go:embed cpython.py
var cpythonFactory string

// HelloCommand is the shell command the lab builder runs on the worker.
const HelloCommand = "echo hello from $(hostname)"

// Render returns the text of master.cfg for cfg. Both ports must be set
// (Start picks free ones before rendering). The result holds the worker
// passwords: write it with mode 0600.
func Render(cfg Config) ([]byte, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("render master.cfg: %w", err)
	}
	if cfg.PBPort == 0 || cfg.WWWPort == 0 {
		return nil, fmt.Errorf("render master.cfg: %w: PB and WWW ports must be set", ErrInvalidConfig)
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# -*- python -*-\n")
	p("# master.cfg for the latentworker lab, written by lab/master. Do not edit:\n")
	p("# it is rewritten every time the lab starts this master.\n")
	p("from buildbot.plugins import schedulers, steps, util, worker\n\n")
	if cfg.AWSEndpoint != "" {
		p("# boto3 talks to the lab: Debian's boto3 predates AWS_ENDPOINT_URL, so\n")
		p("# every session's clients and resources default to the lab's endpoint.\n")
		p("import boto3.session\n\n\n")
		p("def _lab_endpoint(make):\n")
		p("    if getattr(make, 'lab_endpoint', False):\n")
		p("        return make\n\n")
		p("    def with_endpoint(self, *args, **kw):\n")
		p("        kw.setdefault('endpoint_url', %s)\n", pyStr(cfg.AWSEndpoint))
		p("        return make(self, *args, **kw)\n")
		p("    with_endpoint.lab_endpoint = True\n")
		p("    return with_endpoint\n\n\n")
		p("boto3.session.Session.client = _lab_endpoint(boto3.session.Session.client)\n")
		p("boto3.session.Session.resource = _lab_endpoint(boto3.session.Session.resource)\n\n")
	}
	p("c = BuildmasterConfig = {}\n\n")
	if len(cfg.Secrets) > 0 {
		p("# util.Secret(name) reads the file name in the master's %s directory.\n", secretsDir)
		p("import os\n\n")
		p("from buildbot.plugins import secrets\n\n")
		p("c['secretsProviders'] = [secrets.SecretInAFile(dirname=os.path.join(basedir, %s))]\n\n", pyStr(secretsDir))
	}

	p("c['workers'] = [\n")
	for _, w := range cfg.Workers {
		if w.ParallelTests > 0 {
			// As CPython's master's worker declarations carry it; the
			// CPython builder reads it as a property.
			p("    worker.Worker(%s, %s, properties={'parallel_tests': %d}),\n", pyStr(w.Name), pyStr(w.Password), w.ParallelTests)
			continue
		}
		p("    worker.Worker(%s, %s),\n", pyStr(w.Name), pyStr(w.Password))
	}
	p("]\n\n")

	if extra := strings.TrimRight(cfg.Extra, "\n"); extra != "" {
		p("# --- extra configuration (inserted verbatim) ---\n")
		p("%s\n", extra)
		p("# --- end of extra configuration ---\n\n")
	}

	names := make([]string, 0, len(cfg.Workers)+len(cfg.ExtraWorkerNames))
	for _, w := range cfg.Workers {
		names = append(names, w.Name)
	}
	names = append(names, cfg.ExtraWorkerNames...)

	p("# Loopback only: workers connect to %s:%d.\n", cfg.Host, cfg.PBPort)
	p("c['protocols'] = {'pb': {'port': %s}}\n\n", pyStr(strport(cfg.Host, cfg.PBPort)))

	p("factory = util.BuildFactory()\n")
	p("factory.addStep(steps.ShellCommand(name='hello', command=%s))\n\n", pyStr(HelloCommand))
	builders := []string{cfg.BuilderName}
	if cfg.CPython != nil {
		p("%s\n", strings.TrimRight(cpythonFactory, "\n"))
		tests := cfg.CPython.Tests
		if len(tests) == 0 {
			tests = DefaultCPythonTests
		}
		p("\ncpython_factory = CPythonLabBuild(repourl=%s, branch=%s,\n                                  tests=%s)\n\n",
			pyStr(cfg.CPython.Repo), pyStr(cfg.CPython.Branch), pyStrList(tests))
		builders = append(builders, CPythonBuilderName)
	}
	p("c['builders'] = [\n")
	p("    util.BuilderConfig(name=%s, workernames=%s, factory=factory),\n",
		pyStr(cfg.BuilderName), pyStrList(names))
	if cfg.CPython != nil {
		p("    util.BuilderConfig(name=%s, workernames=%s, factory=cpython_factory),\n",
			pyStr(CPythonBuilderName), pyStrList(names))
	}
	p("]\n\n")
	p("c['schedulers'] = [\n")
	p("    schedulers.ForceScheduler(name=%s, builderNames=%s),\n",
		pyStr(cfg.SchedulerName), pyStrList(builders))
	p("]\n\n")

	p("c['title'] = 'latentworker lab'\n")
	p("c['buildbotURL'] = %s\n", pyStr(httpURL(cfg.Host, cfg.WWWPort)))
	p("c['www'] = {'port': %s, 'plugins': {}}\n", pyStr(strport(cfg.Host, cfg.WWWPort)))
	p("c['db'] = {'db_url': %s}\n", pyStr("sqlite:///"+dbFile))
	p("# Never phone home.\n")
	p("c['buildbotNetUsageData'] = None\n")
	return []byte(b.String()), nil
}

// strport is a Twisted server endpoint description bound to host only.
func strport(host string, port int) string {
	return fmt.Sprintf("tcp:%d:interface=%s", port, host)
}

func httpURL(host string, port int) string {
	return "http://" + net.JoinHostPort(host, fmt.Sprint(port)) + "/"
}
