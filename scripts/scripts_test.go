package scripts

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"text/template/parse"

	"github.com/latentworker/latentworker/field"
	"github.com/latentworker/latentworker/platform"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// A real ed25519 public key (its private half was thrown away).
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINhQ3llHUYiRm7zq7HnQVjvopgMF5x2hEugitmx+B6om latentworker-temp"

var goldenWorker = Worker{
	Name:       "cpython-debian12-aws",
	Master:     "buildbot.example.org:9020",
	AdminName:  "Jane Doe",
	AdminEmail: "jane@example.org",
	HostInfo:   "Debian 12 on EC2 t3.medium (latentworker)",
}

// hostileWorker passes Validate but is full of shell metacharacters: after
// quoting they must be plain text.
var hostileWorker = Worker{
	Name:       "w_1-x-y",
	Master:     "[2001:db8::1]:9989",
	AdminName:  `O'Brien $(touch /tmp/lw-pwned) ` + "`id`" + ` "x" \ ; & | * ? ~ # ${HOME}`,
	AdminEmail: `o'b$(id)` + "`x`" + `@example.org`,
	HostInfo:   `'; rm -rf / #' "$(reboot)" ` + "`halt`" + ` $((1+1)) \n %s ! Łódź`,
}

type rendered struct {
	name string
	body []byte
}

// testRSAKey is a real RSA public key (its private half was thrown away):
// the temporary key type of the Windows platforms.
const testRSAKey = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDoMaVsaRKzDGWzEB1cv/kYpPpR8y/lbsU+xRw3I5CAINxLygcoxEUVhAARdp1caX7iZrb4yP1kTkpUlEFf9clBVRzE5kho38TiwN8gKKGQn0wPBLjHze91xATdeomFU5JoiPXtvxqAUfZUIk0F78pG2UkizXOaXfTggnydTRV6bLFMVy6C8snJNaBxXwx5b0BIjTfb6TTFQoBc9xPMLcokvdY30RY/CTcnrXVkaBmbacS6MtMKglT4RQkfNnrr8vzfsILAMaX1JxGkq8nCa1TN8jhByeY9uMhHYRE6coHOvCnETyq86xEbTIeDdSkviXg/xQ969qni1V9bgj9uI+pb latentworker-temp"

// keyFor is the temporary public key bake would make for p.
func keyFor(p *platform.Platform) string {
	if p.KeyType == platform.RSA {
		return testRSAKey
	}
	return testKey
}

// ext is the file name extension of p's rendered scripts.
func ext(p *platform.Platform) string {
	if p.Shell == platform.PowerShell {
		return ".ps1"
	}
	return ".sh"
}

// renderAll renders every script platform has with w: BuildDeps only
// where there is a package list, and the launch user data where the
// platform is reached through it.
func renderAll(t *testing.T, p *platform.Platform, w Worker) []rendered {
	t.Helper()
	var out []rendered
	for _, s := range []struct {
		name string
		fn   func() ([]byte, error)
	}{
		{"setup", func() ([]byte, error) { return Setup(p, w) }},
		{"configure", func() ([]byte, error) { return Configure(p, w) }},
		{"verify", func() ([]byte, error) { return Verify(p, w) }},
		{"updates", func() ([]byte, error) { return Updates(p) }},
		{"reboot-required", func() ([]byte, error) { return RebootRequired(p) }},
		{"generalize", func() ([]byte, error) { return Generalize(p, sshUser(p), keyFor(p)) }},
		{"builddeps", func() ([]byte, error) { return BuildDeps(p) }},
		{"userdata", func() ([]byte, error) { return UserData(p, keyFor(p)) }},
	} {
		b, err := s.fn()
		// Configure (latentworker provision HOST) exists for Linux only.
		if errors.Is(err, ErrUnsupported) && (s.name == "builddeps" && p.BuildDeps == nil ||
			s.name == "userdata" && p.HostKeys != platform.UserDataConsole ||
			s.name == "configure" && p.Family != platform.Linux) {
			continue
		}
		if err != nil {
			t.Fatalf("render %s for %s: %v", s.name, p.Name, err)
		}
		out = append(out, rendered{p.Name + "-" + s.name, b})
	}
	return out
}

// sshUser is p's login user, or a plausible one where the user names it.
func sshUser(p *platform.Platform) string {
	if p.SSHUser == "" {
		return "openbsd"
	}
	return p.SSHUser
}

func TestGolden(t *testing.T) {
	for _, p := range scriptedPlatforms() {
		for _, r := range renderAll(t, p, goldenWorker) {
			t.Run(r.name, func(t *testing.T) {
				path := filepath.Join("testdata", r.name+ext(p)+".golden")
				if *update {
					if err := os.WriteFile(path, r.body, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./scripts -update)", err)
				}
				if !bytes.Equal(r.body, want) {
					t.Errorf("%s differs from %s; run go test ./scripts -update and review the diff", r.name, path)
				}
			})
		}
	}
}

func TestScriptsBasics(t *testing.T) {
	for _, p := range posixPlatforms() {
		for _, r := range renderAll(t, p, goldenWorker) {
			s := string(r.body)
			if !strings.HasPrefix(s, "#!/bin/sh\n") {
				t.Errorf("%s: does not start with #!/bin/sh", r.name)
			}
			if !strings.Contains(s, "\nset -eu\n") {
				t.Errorf("%s: no set -eu", r.name)
			}
			if p.Family == platform.Linux && strings.Contains(s, "su buildbot") {
				t.Errorf("%s: uses su buildbot (its shell is /bin/false)", r.name)
			}
			if strings.Contains(s, "<no value>") {
				t.Errorf("%s: rendered <no value>", r.name)
			}
		}
	}
	deb, _ := Setup(platform.MustLookup("debian-12"), goldenWorker)
	ubu, _ := Setup(platform.MustLookup("ubuntu-24.04"), goldenWorker)
	if strings.Contains(string(deb), "apt_component 'universe'") || !strings.Contains(string(ubu), "apt_component 'universe'") {
		t.Errorf("only the Ubuntu setup script should enable universe")
	}
	for _, tc := range []struct {
		platform string
		want     []string
	}{
		// AWS's RHEL images: CRB from RHUI, then EPEL; never
		// subscription-manager first.
		{"rhel-9", []string{"for lw_repo in 'codeready-builder-for-rhel-9-rhui-rpms' 'epel'; do", "INSTALL='package'", "BUILDBOT_WORKER='/usr/bin/buildbot-worker'", "WORKERS_DIR='/var/lib/buildbot/worker'", "WORKER_USER='buildbot-worker'"}},
		{"centos-stream-9", []string{"for lw_repo in 'crb' 'epel' 'epel-next'; do"}},
		{"amazonlinux-2023", []string{"INSTALL='pip'", "PACKAGE=''", "PIP_REQUIREMENT='buildbot-worker'", "BUILDBOT_WORKER='/opt/buildbot-worker/bin/buildbot-worker'"}},
	} {
		body, err := Setup(platform.MustLookup(tc.platform), goldenWorker)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tc.want {
			if !strings.Contains(string(body), want) {
				t.Errorf("Setup(%s) lacks %q", tc.platform, want)
			}
		}
	}
	pinned := goldenWorker
	pinned.Version = "4.3.0"
	if body, _ := Setup(platform.MustLookup("debian-12").WithPip(), pinned); !strings.Contains(string(body), "PIP_REQUIREMENT='buildbot-worker==4.3.0'") {
		t.Errorf("a pinned version does not reach pip")
	}
	if conf, _ := Configure(platform.MustLookup("fedora"), goldenWorker); strings.Contains(string(conf), "pm_install") || strings.Contains(string(conf), "dnf") {
		t.Errorf("Configure renders the install half or the package manager")
	}
}

// requireTool returns the path of a tool, skipping the test when it is
// missing, except under CI=true, where a missing tool fails the test.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required when CI=true: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return path
}

func TestShellcheck(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck")
	seen := map[string]bool{}
	for _, p := range posixPlatforms() {
		// With -short, one platform per package manager and install
		// method: the others render the same text with other values.
		if key := string(p.Family) + "/" + p.PackageManager + "/" + string(p.Install); testing.Short() && seen[key] {
			continue
		} else {
			seen[key] = true
		}
		for _, tc := range []struct {
			label string
			w     Worker
			args  []string
		}{
			{"golden", goldenWorker, nil},
			// SC2016 ("expressions don't expand in single quotes") is
			// exactly what quoting hostile values is for.
			{"hostile", hostileWorker, []string{"--exclude=SC2016"}},
		} {
			for _, r := range renderAll(t, p, tc.w) {
				t.Run(tc.label+"/"+r.name, func(t *testing.T) {
					t.Parallel()
					args := append([]string{"-s", "sh", "-f", "gcc"}, tc.args...)
					cmd := exec.Command(shellcheck, append(args, "-")...)
					cmd.Stdin = bytes.NewReader(r.body)
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("shellcheck %s: %v\n%s", r.name, err, out)
					}
				})
			}
		}
	}
}

// TestOnlyQuotedActions walks the templates: every {{...}} that prints
// something must end in the sh quoting function (or include a fixed helper
// file), so no value can reach a script unquoted.
func TestOnlyQuotedActions(t *testing.T) {
	for _, p := range scriptedPlatforms() {
		tmpl, _, err := templates(p)
		if err != nil {
			t.Fatal(err)
		}
		quote := "sh"
		if p.Shell == platform.PowerShell {
			quote = "ps"
		}
		checkQuotedActions(t, tmpl, quote)
	}
}

func checkQuotedActions(t *testing.T, tmpl *template.Template, quote string) {
	t.Helper()
	var walk func(name string, n parse.Node)
	walk = func(name string, n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(name, c)
			}
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 {
				t.Errorf("%s: %s: variable declarations are not allowed", name, n)
				return
			}
			last := n.Pipe.Cmds[len(n.Pipe.Cmds)-1]
			id, ok := last.Args[0].(*parse.IdentifierNode)
			if !ok || (id.Ident != quote && id.Ident != "include") {
				t.Errorf("%s: action %s does not end in %s", name, n, quote)
			}
			if ok && id.Ident == "include" {
				if len(last.Args) != 2 || last.Args[1].Type() != parse.NodeString {
					t.Errorf("%s: include needs a constant file name: %s", name, n)
				}
			}
		case *parse.IfNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.RangeNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.WithNode:
			walk(name, n.List)
			walk(name, n.ElseList)
		case *parse.TextNode, *parse.TemplateNode, *parse.CommentNode:
		default:
			t.Errorf("%s: unexpected template node %T: %s", name, n, n)
		}
	}
	count := 0
	for _, tt := range tmpl.Templates() {
		if tt.Tree == nil {
			continue
		}
		count++
		walk(tt.Name(), tt.Tree.Root)
	}
	if count < 7 {
		t.Errorf("walked %d templates; want all of them", count)
	}
}

func TestShQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"plain", "'plain'"},
		{"it's", `'it'\''s'`},
		{"''", `''\'''\'''`},
		{"$(id) `id` ${x} \\ \" ;&|<>*?~#", "'$(id) `id` ${x} \\ \" ;&|<>*?~#'"},
		{"a\nb", "'a\nb'"},
	} {
		got, err := shQuote(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("shQuote(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
		}
	}
	if _, err := shQuote("a\x00b"); err == nil {
		t.Errorf("shQuote(%q) = nil error; want an error", "a\x00b")
	}
}

// TestQuotingInert feeds quoted hostile strings to a real sh and checks
// that they come back unchanged and that nothing ran.
func TestQuotingInert(t *testing.T) {
	sh := requireTool(t, "sh")
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	inputs := []string{
		"$(touch " + marker + ")",
		"`touch " + marker + "`",
		"'; touch " + marker + "; '",
		"'\"'\"'$(touch " + marker + ")",
		"a\nb; touch " + marker,
		"${HOME} $((1+1)) \\ ! * ~",
		"Łódź – naïve",
	}
	for _, in := range inputs {
		q, err := shQuote(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sh, "-c", "v="+q+"; printf '%s' \"$v\"").Output()
		if err != nil {
			t.Errorf("sh -c with %q: %v", q, err)
			continue
		}
		if string(out) != in {
			t.Errorf("sh round trip of %q = %q", in, out)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("a quoted value was executed: %s exists", marker)
	}
}

// TestRenderedValuesInert runs the value assignments of a Setup script
// rendered with hostileWorker and checks that the shell sees the values
// verbatim.
func TestRenderedValuesInert(t *testing.T) {
	sh := requireTool(t, "sh")
	if err := hostileWorker.Validate(); err != nil {
		t.Fatalf("hostileWorker should be valid: %v", err)
	}
	body, err := Setup(platform.MustLookup("debian-12"), hostileWorker)
	if err != nil {
		t.Fatal(err)
	}
	var assigns []string
	for _, l := range strings.Split(string(body), "\n") {
		for _, v := range []string{"WORKER_NAME=", "MASTER_ARG=", "MASTER_HOST=", "MASTER_PORT=", "INFO_ADMIN=", "INFO_HOST="} {
			if strings.HasPrefix(l, v) {
				assigns = append(assigns, l)
			}
		}
	}
	if len(assigns) != 6 {
		t.Fatalf("found %d value assignments, want 6: %q", len(assigns), assigns)
	}
	script := strings.Join(assigns, "\n") + "\nprintf '%s\\0' \"$WORKER_NAME\" \"$MASTER_ARG\" \"$MASTER_HOST\" \"$MASTER_PORT\" \"$INFO_ADMIN\" \"$INFO_HOST\"\n"
	cmd := exec.Command(sh, "-c", script)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	want := []string{hostileWorker.Name, hostileWorker.Master, "2001:db8::1", "9989", hostileWorker.InfoAdmin(), hostileWorker.HostInfo}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values after sh = %q; want %q", got, want)
	}
	if _, err := os.Stat("/tmp/lw-pwned"); err == nil {
		t.Errorf("/tmp/lw-pwned exists: a value was executed")
	}
}

// TestInjectionRejected: values that quoting could carry but that have no
// business in a script (newlines, control characters) are refused before
// rendering, by field.
func TestInjectionRejected(t *testing.T) {
	for _, tc := range []struct {
		field string
		mod   func(*Worker)
	}{
		{"Name", func(w *Worker) { w.Name = "w1';reboot;'" }},
		{"Name", func(w *Worker) { w.Name = "w1$(id)" }},
		{"Name", func(w *Worker) { w.Name = "w1\nreboot" }},
		{"Master", func(w *Worker) { w.Master = "host$(id):9989" }},
		{"Master", func(w *Worker) { w.Master = "host:9989\nreboot" }},
		{"Master", func(w *Worker) { w.Master = "`id`:1" }},
		{"AdminName", func(w *Worker) { w.AdminName = "Jane\nreboot" }},
		{"AdminName", func(w *Worker) { w.AdminName = "Jane\x1b[2J" }},
		{"AdminEmail", func(w *Worker) { w.AdminEmail = "j@x\n.org" }},
		{"HostInfo", func(w *Worker) { w.HostInfo = "x\r\nreboot" }},
		{"HostInfo", func(w *Worker) { w.HostInfo = "x\x00y" }},
	} {
		w := goldenWorker
		tc.mod(&w)
		for _, p := range scriptedPlatforms() {
			if _, err := Setup(p, w); !hasFieldError(err, tc.field) {
				t.Errorf("Setup(%s, %+v) error = %v; want a %s FieldError", p.Name, w, err, tc.field)
			}
			if _, err := Verify(p, w); !hasFieldError(err, tc.field) {
				t.Errorf("Verify(%s, %+v) error = %v; want a %s FieldError", p.Name, w, err, tc.field)
			}
		}
	}
}

func hasFieldError(err error, field string) bool {
	for _, f := range fieldErrors(err) {
		if f.Field == field {
			return true
		}
	}
	return false
}

func fieldErrors(err error) []*FieldError { return field.All(err) }

func TestUnsupportedFamily(t *testing.T) {
	p := &platform.Platform{Name: "plan9", Family: "plan9"}
	for name, fn := range map[string]func() ([]byte, error){
		"Setup":          func() ([]byte, error) { return Setup(p, goldenWorker) },
		"Verify":         func() ([]byte, error) { return Verify(p, goldenWorker) },
		"Updates":        func() ([]byte, error) { return Updates(p) },
		"RebootRequired": func() ([]byte, error) { return RebootRequired(p) },
		"Generalize":     func() ([]byte, error) { return Generalize(p, "root", testKey) },
		"BuildDeps":      func() ([]byte, error) { return BuildDeps(p) },
	} {
		if _, err := fn(); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s(family plan9) error = %v; want ErrUnsupported", name, err)
		}
	}
}

// scriptedPlatforms are the registry's platforms whose family has
// scripts (all of them), and Debian 12 with image.install = "pip" (as
// "debian-12-pip").
func scriptedPlatforms() []*platform.Platform {
	var ps []*platform.Platform
	for _, p := range platform.All() {
		if _, ok := families[p.Family]; ok {
			ps = append(ps, p)
		}
	}
	pip := *platform.MustLookup("debian-12").WithPip()
	pip.Name += "-pip"
	return append(ps, &pip)
}

// posixPlatforms are the scripted platforms whose scripts are sh.
func posixPlatforms() []*platform.Platform {
	var ps []*platform.Platform
	for _, p := range scriptedPlatforms() {
		if p.Shell == platform.POSIX {
			ps = append(ps, p)
		}
	}
	return ps
}

func TestEveryPlatformHasScripts(t *testing.T) {
	for _, p := range platform.All() {
		if _, ok := families[p.Family]; !ok {
			t.Errorf("%s: family %s has no scripts", p.Name, p.Family)
		}
	}
}

func TestGeneralizeKey(t *testing.T) {
	ecdsa := "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBp/MsaT1k5L747SjZAFqRaTnmlMvXj/W/LdjoZBPqjGi97IhDhuN1knGBobncwGZTOQOnGHRwV57TtchN4j7WQ="
	for _, tc := range []struct {
		key      string
		wantType string
		ok       bool
	}{
		{testKey, "ssh-ed25519", true},
		{testKey + "\n", "ssh-ed25519", true},
		{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINhQ3llHUYiRm7zq7HnQVjvopgMF5x2hEugitmx+B6om", "ssh-ed25519", true},
		{ecdsa + " me@host", "ecdsa-sha2-nistp256", true},
		{"", "", false},
		{"ssh-ed25519", "", false},
		{"ssh-dss AAAAB3NzaC1kc3M=", "", false},
		{"ssh-ed25519 not*base64", "", false},
		{"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAINhQ3llHUYiRm7zq7HnQVjvopgMF5x2hEugitmx+B6om", "", false}, // type mismatch
		{`from="1.2.3.4" ` + testKey, "", false},
		{testKey + "\nssh-ed25519 AAAA", "", false},
		{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINhQ3llHUYiRm7zq7HnQVjvopgMF5x2hEugitmx+B6om';reboot;'", "", false},
	} {
		typ, _, err := parsePublicKey(tc.key)
		if (err == nil) != tc.ok || typ != tc.wantType {
			t.Errorf("parsePublicKey(%q) = %q, %v; want %q, ok=%v", tc.key, typ, err, tc.wantType, tc.ok)
		}
		_, gerr := Generalize(platform.MustLookup("debian-12"), "admin", tc.key)
		if tc.ok != (gerr == nil) || (!tc.ok && !errors.Is(gerr, ErrInvalidKey)) {
			t.Errorf("Generalize(debian, %q) error = %v; want ok=%v", tc.key, gerr, tc.ok)
		}
	}
	ubuntu := platform.MustLookup("ubuntu-24.04")
	body, _ := Generalize(ubuntu, ubuntu.SSHUser, testKey)
	if !strings.Contains(string(body), "DEFAULT_USER='ubuntu'") {
		t.Errorf("Ubuntu generalize script does not target user ubuntu")
	}
	if strings.Contains(string(body), "latentworker-temp") {
		t.Errorf("generalize script carries the key comment; only type and material are needed")
	}
}

func TestBuildDepsPackages(t *testing.T) {
	deb := platform.MustLookup("debian-12")
	got := BuildDepsPackages(deb)
	for _, want := range []string{"git", "build-essential", "pkg-config", "libssl-dev", "libzstd-dev", "tk-dev", "netbase"} {
		if !slices.Contains(got, want) {
			t.Errorf("BuildDepsPackages(debian-12) lacks %s", want)
		}
	}
	// Debian 12 has no libmpdec-dev: a name the release lacks would fail
	// the bake, so its list leaves it out.
	if slices.Contains(got, "libmpdec-dev") {
		t.Errorf("BuildDepsPackages(debian-12) has libmpdec-dev, which bookworm lacks")
	}
	got[0] = "changed"
	if BuildDepsPackages(deb)[0] == "changed" {
		t.Errorf("BuildDepsPackages returns the package's own slice")
	}
	// Every platform but those with nothing to install has a list, with
	// git (a checkout starts every build) where a package manager installs
	// it, and the source of the list.
	for _, p := range platform.All() {
		if p.BuildDeps == nil {
			t.Errorf("%s: no CPython build dependencies", p.Name)
			continue
		}
		if p.BuildDeps.Source == "" || strings.ContainsAny(p.BuildDeps.Source, "\r\n") {
			t.Errorf("%s: build dependencies' source %q; want one line", p.Name, p.BuildDeps.Source)
		}
		names := BuildDepsPackages(p)
		switch p.Family {
		case platform.Linux, platform.FreeBSD, platform.OpenBSD:
			if !slices.Contains(names, "git") {
				t.Errorf("%s: build dependencies %v lack git", p.Name, names)
			}
		case platform.Windows:
			if len(p.BuildDeps.Installers) == 0 {
				t.Errorf("%s: no installers (Git for Windows, the Build Tools)", p.Name)
			}
		}
		for _, n := range names {
			if err := ValidPackageName(n); err != nil {
				t.Errorf("%s: %v", p.Name, err)
			}
		}
	}
}

// TestBuildDepsFailNamingMissing: the script checks every name before it
// installs anything and dies naming the missing ones; extra packages join
// the list, and a name that is not a package's is refused before
// rendering.
func TestBuildDepsFailNamingMissing(t *testing.T) {
	for _, name := range []string{"debian-12", "fedora", "freebsd-14", "openbsd", "macos"} {
		p := platform.MustLookup(name)
		body, err := BuildDeps(p, "lw-extra-pkg")
		if err != nil {
			t.Fatalf("BuildDeps(%s): %v", name, err)
		}
		s := string(body)
		check := strings.Index(s, `if [ -z "$(pm_candidate "$lw_pkg")" ]`)
		install := strings.LastIndex(s, "pm_install")
		if check < 0 || install < check || !strings.Contains(s, "die \"no such package") {
			t.Errorf("%s: the script does not check every name before installing and die naming the missing ones", name)
		}
		if !strings.Contains(s, " 'lw-extra-pkg'; do") {
			t.Errorf("%s: the extra package is not in the checked list", name)
		}
	}
	for _, bad := range []string{"", "-o", "a b", "x;reboot", "$(id)", "pkg\n", "a'b"} {
		if _, err := BuildDeps(platform.MustLookup("debian-12"), bad); !errors.Is(err, ErrPackageName) {
			t.Errorf("BuildDeps(debian-12, %q) error = %v; want ErrPackageName", bad, err)
		}
	}
	if _, err := Packages(platform.MustLookup("windows-2025"), []string{"git"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Packages(windows-2025, git) error = %v; want ErrUnsupported", err)
	}
	body, err := Packages(platform.MustLookup("ubuntu-24.04"), []string{"cmake"})
	if err != nil || !strings.Contains(string(body), "for lw_pkg in 'cmake'; do") || strings.Contains(string(body), "'git'") {
		t.Errorf("Packages(ubuntu-24.04, cmake) = %v; want a script installing cmake alone\n%s", err, body)
	}
}

func TestIncludeRefusesDelimiter(t *testing.T) {
	for _, name := range []string{"tacedit.py", "facts.py"} {
		if _, err := include(name); err != nil {
			t.Errorf("include(%q): %v", name, err)
		}
	}
	if _, err := include("missing.py"); err == nil {
		t.Errorf("include(missing.py) = nil error")
	}
}
