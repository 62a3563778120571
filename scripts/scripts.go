package scripts

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"

	"github.com/latentworker/latentworker/platform"
)

// VenvDir is where Setup installs buildbot-worker with pip when the
// platform installs it that way or its distribution has no package.
const VenvDir = "/opt/buildbot-worker"

// ErrUnsupported is returned (wrapped) for a platform whose family has no
// scripts of the kind asked for.
var ErrUnsupported = errors.New("no such script for this platform")

// ErrInvalidKey is returned (wrapped) by Generalize for a public key that is
// not a single OpenSSH public key line.
var ErrInvalidKey = errors.New("invalid SSH public key")

// BuildDepsPackages returns the package names of p's CPython build
// dependencies (platform.BuildDeps), or nil when p has none.
func BuildDepsPackages(p *platform.Platform) []string {
	return p.BuildDepsPackages()
}

// Setup renders the script that installs buildbot-worker (the install
// half: the distribution package, or pip into VenvDir when the platform
// installs with pip) and then configures the worker w (the configure half,
// see Configure). The script reads the worker password as the first line of
// its stdin. Running it again converges: a changed master, password or info
// is written and the service restarted.
func Setup(p *platform.Platform, w Worker) ([]byte, error) {
	data, err := workerData(p, w)
	if err != nil {
		return nil, fmt.Errorf("setup script: %w", err)
	}
	return render(p, "setup", data)
}

// Configure renders the configure half of Setup alone, for a machine where
// buildbot-worker is already installed the platform's way (BuildbotWorker):
// on the pip path it makes the system user and the guide's systemd unit;
// then, on both paths, the workers directory, create-worker, buildbot.tac,
// info/admin and info/host, SELinux contexts (restorecon, where SELinux is
// enabled) and the enabled, started service. It reads the password as Setup
// does.
func Configure(p *platform.Platform, w Worker) ([]byte, error) {
	data, err := workerData(p, w)
	if err != nil {
		return nil, fmt.Errorf("configure script: %w", err)
	}
	return render(p, "configure", data)
}

// BuildbotWorker is the path of the buildbot-worker program on p: the
// package's /usr/bin/buildbot-worker, or the one in VenvDir.
func BuildbotWorker(p *platform.Platform) string {
	if p.Install == platform.Pip {
		return VenvDir + "/bin/buildbot-worker"
	}
	return "/usr/bin/buildbot-worker"
}

// PipRequirement is what pip installs for w: buildbot-worker, pinned to
// w.Version when it is set.
func PipRequirement(w Worker) string {
	if w.Version == "" {
		return "buildbot-worker"
	}
	return "buildbot-worker==" + w.Version
}

func workerData(p *platform.Platform, w Worker) (map[string]any, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	host, port, err := w.MasterHostPort()
	if err != nil {
		return nil, err
	}
	data := map[string]any{
		"Name":           w.Name,
		"MasterArg":      w.Master,
		"MasterHost":     host,
		"MasterPort":     strconv.Itoa(port),
		"InfoAdmin":      w.InfoAdmin(),
		"HostInfo":       w.HostInfo,
		"WorkersDir":     p.WorkersDir,
		"WorkerDir":      p.WorkerDir(w.Name),
		"WorkerUser":     p.WorkerUser,
		"WorkerGroup":    p.Group(),
		"Install":        string(p.Install),
		"Package":        packageName(p),
		"Unit":           p.Unit(w.Name),
		"Service":        string(p.Service),
		"VenvDir":        VenvDir,
		"PipRequirement": PipRequirement(w),
		"BuildbotWorker": BuildbotWorker(p),
	}
	for k, v := range pythonData(p) {
		data[k] = v
	}
	return data, nil
}

// pythonData is the python.org installer a platform pins (Windows), or
// empty values.
func pythonData(p *platform.Platform) map[string]any {
	var py platform.PythonInstaller
	if p.Python != nil {
		py = *p.Python
	}
	return map[string]any{"PythonVersion": py.Version, "PythonURL": py.URL, "PythonSHA256": py.SHA256}
}

// Verify renders the script that prints key=value facts about worker w on
// stdout (see Facts). It reads the expected password as the first line of
// its stdin and prints only whether it matches. Only w.Name is used by the
// script; the whole Worker is validated so that Verify and Check agree.
func Verify(p *platform.Platform, w Worker) ([]byte, error) {
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("verify script: %w", err)
	}
	return render(p, "verify", map[string]any{
		"Name":       w.Name,
		"WorkerDir":  p.WorkerDir(w.Name),
		"WorkerUser": p.WorkerUser,
		"Unit":       p.Unit(w.Name),
		"Service":    string(p.Service),
		"VenvDir":    VenvDir,
	}, pythonData(p))
}

// Updates renders the script that applies all pending updates
// (apt-get update, dist-upgrade keeping existing configuration files, clean).
func Updates(p *platform.Platform) ([]byte, error) {
	return render(p, "updates", nil)
}

// RebootRequired renders the script that says through its exit status
// whether a reboot is needed: 0 = required, 10 = not required, any other
// status = the check failed. It looks at /var/run/reboot-required, whether
// the default kernel is the running one, and needrestart when installed.
func RebootRequired(p *platform.Platform) ([]byte, error) {
	return render(p, "reboot-required", nil)
}

// Exit statuses of the RebootRequired script.
const (
	RebootRequiredExit    = 0
	RebootNotRequiredExit = 10
)

// Generalize renders the script that prepares the instance for imaging: it
// removes tempPublicKey (an OpenSSH public key line, matched on its type and
// key material) from the default user's and root's authorized_keys, deletes
// the SSH host keys, empties /etc/machine-id, removes
// /var/lib/dbus/machine-id, runs "cloud-init clean --logs" where cloud-init
// exists, trims logs, removes shell history and runs apt-get clean. The
// worker service stays enabled.
func Generalize(p *platform.Platform, sshUser, tempPublicKey string) ([]byte, error) {
	keyType, blob, err := parsePublicKey(tempPublicKey)
	if err != nil {
		return nil, fmt.Errorf("generalize script: %w", err)
	}
	return render(p, "generalize", map[string]any{
		"DefaultUser": sshUser,
		"KeyType":     keyType,
		"KeyBlob":     blob,
	})
}

// BuildDeps renders the script that installs p's CPython build
// dependencies (platform.BuildDeps) and the packages extra (the
// configuration's image.extra_packages). Every name must exist in the
// release: the script checks them all before it installs anything and
// fails naming each one that is missing. Extra package names are
// validated (ValidPackageName). It returns an error wrapping
// ErrUnsupported for a platform without build dependencies.
func BuildDeps(p *platform.Platform, extra ...string) ([]byte, error) {
	if p.BuildDeps == nil {
		return nil, fmt.Errorf("builddeps for %s: %w", p.Name, ErrUnsupported)
	}
	return renderPackages(p, p.BuildDeps, extra)
}

// Packages renders the BuildDeps script with the packages names alone
// (image.extra_packages without the build dependencies). It returns an
// error wrapping ErrUnsupported for a platform whose packages are not
// installed by a package manager (Windows).
func Packages(p *platform.Platform, names []string) ([]byte, error) {
	return renderPackages(p, &platform.BuildDeps{Source: "the configuration's image.extra_packages"}, names)
}

// ErrPackageName is returned (wrapped) for an extra package name that
// ValidPackageName refuses.
var ErrPackageName = errors.New("invalid package name")

// packageNameRE is what a package name may look like on every package
// manager latentworker drives: letters, digits and + . _ - : @ % / (a
// FreeBSD origin, an OpenBSD flavour, a Homebrew tap), starting with a
// letter or digit.
var packageNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+._:@%/-]*$`)

// ValidPackageName checks an extra package's name: a package manager's
// name, never an option (no leading "-") or anything a shell would read.
func ValidPackageName(name string) error {
	if len(name) > 200 || !packageNameRE.MatchString(name) {
		return fmt.Errorf("%w %q: letters, digits and + . _ - : @ %% /, starting with a letter or digit", ErrPackageName, name)
	}
	return nil
}

func renderPackages(p *platform.Platform, deps *platform.BuildDeps, extra []string) ([]byte, error) {
	for _, n := range extra {
		if err := ValidPackageName(n); err != nil {
			return nil, fmt.Errorf("builddeps for %s: %w", p.Name, err)
		}
	}
	if len(extra) > 0 && p.Family == platform.Windows {
		return nil, fmt.Errorf("extra packages for %s: %w (Windows has no package manager here)", p.Name, ErrUnsupported)
	}
	pkgs := append(slices.Clone(deps.Packages), extra...)
	if len(pkgs) == 0 && len(deps.Installers) == 0 {
		return nil, fmt.Errorf("builddeps for %s: %w (nothing to install)", p.Name, ErrUnsupported)
	}
	if strings.ContainsAny(deps.Source, "\r\n") {
		return nil, fmt.Errorf("builddeps for %s: the list's source spans lines", p.Name)
	}
	return render(p, "builddeps", map[string]any{
		"Source":     deps.Source,
		"BuildDepOf": deps.BuildDepOf,
		"Packages":   pkgs,
		"Extra":      extra,
		"Installers": deps.Installers,
	})
}

var keyTypes = map[string]bool{
	"ssh-ed25519":                        true,
	"ssh-rsa":                            true,
	"ecdsa-sha2-nistp256":                true,
	"ecdsa-sha2-nistp384":                true,
	"ecdsa-sha2-nistp521":                true,
	"sk-ssh-ed25519@openssh.com":         true,
	"sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// parsePublicKey accepts one authorized_keys-style line without options,
// "TYPE BASE64 [COMMENT]", and returns its type and key material. The
// material must decode and name the same type.
func parsePublicKey(line string) (string, string, error) {
	line = strings.TrimRight(line, "\r\n")
	if strings.ContainsAny(line, "\r\n\x00") {
		return "", "", fmt.Errorf("%w: must be a single line", ErrInvalidKey)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", "", fmt.Errorf("%w: want \"TYPE BASE64 [COMMENT]\"", ErrInvalidKey)
	}
	if !keyTypes[f[0]] {
		return "", "", fmt.Errorf("%w: unsupported key type %q", ErrInvalidKey, f[0])
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(f[1])
	if err != nil {
		return "", "", fmt.Errorf("%w: key material is not base64: %w", ErrInvalidKey, err)
	}
	if len(raw) < 4 || int(binary.BigEndian.Uint32(raw)) > len(raw)-4 ||
		string(raw[4:4+binary.BigEndian.Uint32(raw)]) != f[0] {
		return "", "", fmt.Errorf("%w: key material is not a %s key", ErrInvalidKey, f[0])
	}
	return f[0], f[1], nil
}

// UserData renders the launch user data of a platform that is reached
// through it (Windows: EC2Launch v2 runs the <powershell> block at the
// first boot), with publicKey, the temporary key, allowed to log in. It
// returns an error wrapping ErrUnsupported for a platform without user
// data. It holds no secret.
func UserData(p *platform.Platform, publicKey string) ([]byte, error) {
	keyType, blob, err := parsePublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("user data: %w", err)
	}
	if p.HostKeys != platform.UserDataConsole {
		return nil, fmt.Errorf("user data for %s: %w", p.Name, ErrUnsupported)
	}
	body, err := render(p, "userdata", map[string]any{"PublicKey": keyType + " " + blob})
	if err != nil {
		return nil, err
	}
	body = bytes.TrimPrefix(body, utf8BOM)
	out := append([]byte("<powershell>\n"), body...)
	return append(out, "</powershell>\n"...), nil
}

// utf8BOM starts every rendered PowerShell script: Windows PowerShell 5.1
// reads a script without one in the machine's ANSI code page.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// psQuote quotes s as one single-quoted PowerShell string, the only way a
// value enters a PowerShell script (the "ps" template function).
// PowerShell also takes the typographic single quotes U+2018-U+201B as
// quotes, so they are doubled too. NUL is refused.
func psQuote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("PowerShell quoting: value contains NUL")
	}
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch r {
		case '\'', '\u2018', '\u2019', '\u201A', '\u201B':
			b.WriteRune(r)
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String(), nil
}

// shQuote quotes s as one single-quoted POSIX shell word. It is the only way
// a value enters a script (the "sh" template function). NUL cannot be
// represented in a shell word and is refused.
func shQuote(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("shell quoting: value contains NUL")
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// include returns the raw content of an embedded Python helper
// (python/NAME), for quoted here-documents. It refuses a helper containing
// the here-document delimiter.
func include(name string) (string, error) {
	b, err := files.ReadFile("python/" + name)
	if err != nil {
		return "", fmt.Errorf("include %s: %w", name, err)
	}
	s := strings.TrimRight(string(b), "\n")
	for _, l := range strings.Split(s, "\n") {
		if l == heredocDelimiter || strings.HasPrefix(l, "'@") {
			return "", fmt.Errorf("include %s: contains a here-document or here-string delimiter", name)
		}
	}
	return s, nil
}

const heredocDelimiter = "LATENTWORKER_PY"

// packageName is the distribution package Setup installs, or "" when the
// platform installs buildbot-worker with pip.
func packageName(p *platform.Platform) string {
	if p.Install != platform.Package {
		return ""
	}
	return p.Package
}

// family says where a family's templates live and how its files end.
type family struct {
	dir, ext string
}

var families = map[platform.Family]family{
	platform.Linux: {"linux", ".sh.tmpl"},
	// FreeBSD, OpenBSD and macOS share a POSIX core; their fragment
	// (unix/pm/PM.sh.tmpl) holds the package manager and the service.
	platform.FreeBSD: {"unix", ".sh.tmpl"},
	platform.OpenBSD: {"unix", ".sh.tmpl"},
	platform.MacOS:   {"unix", ".sh.tmpl"},
	platform.Windows: {"windows", ".ps1.tmpl"},
}

var (
	setsMu sync.Mutex
	sets   = map[string]*template.Template{}
)

// templates returns the template set of p: its family's core, plus the
// fragment of its package manager (FAMILY/pm/PM.*), which defines "pm".
func templates(p *platform.Platform) (*template.Template, family, error) {
	fam, ok := families[p.Family]
	if !ok {
		return nil, fam, fmt.Errorf("%s: %w (family %s has no scripts)", p.Name, ErrUnsupported, p.Family)
	}
	key := fam.dir + "/" + p.PackageManager
	setsMu.Lock()
	defer setsMu.Unlock()
	if t := sets[key]; t != nil {
		return t, fam, nil
	}
	t, err := template.New("scripts").
		Option("missingkey=error").
		Funcs(template.FuncMap{"sh": shQuote, "ps": psQuote, "include": include}).
		ParseFS(files, fam.dir+"/*"+fam.ext)
	if err == nil && p.PackageManager != "" {
		t, err = t.ParseFS(files, fam.dir+"/pm/"+p.PackageManager+fam.ext)
	}
	if err != nil {
		return nil, fam, fmt.Errorf("parse %s scripts: %w", key, err)
	}
	sets[key] = t
	return t, fam, nil
}

// render executes script name of p's family with data, plus "P" (the
// platform).
func render(p *platform.Platform, name string, data map[string]any, more ...map[string]any) ([]byte, error) {
	t, fam, err := templates(p)
	if err != nil {
		return nil, err
	}
	if t.Lookup(name+fam.ext) == nil {
		return nil, fmt.Errorf("%s script for %s: %w", name, p.Name, ErrUnsupported)
	}
	d := map[string]any{"P": p}
	for _, m := range append([]map[string]any{data}, more...) {
		for k, v := range m {
			d[k] = v
		}
	}
	var buf bytes.Buffer
	if p.Shell == platform.PowerShell {
		buf.Write(utf8BOM)
	}
	if err := t.ExecuteTemplate(&buf, name+fam.ext, d); err != nil {
		return nil, fmt.Errorf("render %s for %s: %w", name, p.Name, err)
	}
	return buf.Bytes(), nil
}
