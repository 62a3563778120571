package scripts

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/platform"
)

// goodFacts is Verify's output for goldenWorker on a finished instance.
const goodFacts = `worker_dir=/var/lib/buildbot/workers/cpython-debian12-aws
tac_present=yes
tac_mode=0600
tac_owner=buildbot:buildbot
keepalive=60
delete_leftover_dirs=1
buildmaster_host=buildbot.example.org
port=9020
workername=cpython-debian12-aws
passwd=ok
info_admin=Jane Doe <jane AT example.org>
info_host_present=yes
info_host=Debian 12 on EC2 t3.medium (latentworker)
service_enabled=enabled
service_active=active
service_result=success
service_exit_status=0
service_started_usec=2712345
worker_refused=no
`

// TestServiceUp: a worker is up when its service is active, or when it
// started in this boot and ended with status 0 because the master refused
// it; nothing else.
func TestServiceUp(t *testing.T) {
	refused := Facts{ServiceActive: "inactive", ServiceResult: "success", ServiceExitStatus: "0", ServiceStartedUsec: "2712345", WorkerRefused: "yes"}
	for _, tc := range []struct {
		desc string
		edit func(*Facts)
		want bool
	}{
		{"active", func(f *Facts) { *f = Facts{ServiceActive: "active"} }, true},
		{"refused by the master", func(*Facts) {}, true},
		{"ended without a refusal", func(f *Facts) { f.WorkerRefused = "no" }, false},
		{"not started in this boot", func(f *Facts) { f.ServiceStartedUsec = "0" }, false},
		{"exit status 1", func(f *Facts) { f.ServiceResult, f.ServiceExitStatus = "exit-code", "1" }, false},
		{"failed", func(f *Facts) { f.ServiceActive = "failed" }, false},
		{"activating", func(f *Facts) { f.ServiceActive = "activating" }, false},
		{"no state", func(f *Facts) { *f = Facts{} }, false},
	} {
		f := refused
		tc.edit(&f)
		if got, why := f.ServiceUp(); got != tc.want || why == "" {
			t.Errorf("%s: ServiceUp() = %v, %q; want %v and a description", tc.desc, got, why, tc.want)
		}
	}
}

func TestParseFacts(t *testing.T) {
	f, err := ParseFacts([]byte(goodFacts))
	if err != nil {
		t.Fatalf("ParseFacts(good) error: %v", err)
	}
	if f.Keepalive != "60" || f.MasterHost != "buildbot.example.org" || f.Passwd != "ok" ||
		f.ServiceEnabled != "enabled" || f.InfoAdmin != "Jane Doe <jane AT example.org>" || len(f.Raw) != 19 {
		t.Errorf("ParseFacts(good) = %+v", f)
	}
	if err := f.Check(debian12, goldenWorker); err != nil {
		t.Errorf("Check(good) = %v; want nil", err)
	}

	f, err = ParseFacts([]byte("info_host=a\\\\b\\x0ac=d\r\n\nextra_key=kept\n"))
	if err != nil {
		t.Fatalf("ParseFacts(escaped): %v", err)
	}
	if f.InfoHost != "a\\b\nc=d" || f.Raw["extra_key"] != "kept" {
		t.Errorf("ParseFacts(escaped) = %q, raw %q", f.InfoHost, f.Raw)
	}

	for _, bad := range []string{
		"",
		"\n\n",
		"no equals sign\n",
		"=value\n",
		"port=1\nport=2\n",
		"info_host=bad \\q escape\n",
		"info_host=bad \\xZZ escape\n",
		"info_host=trailing\\\n",
	} {
		if f, err := ParseFacts([]byte(bad)); err == nil {
			t.Errorf("ParseFacts(%q) = %+v, nil; want an error", bad, f)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		desc string
		edit func(string) string
		want []string // substrings, one per expected mismatch
	}{
		{"keepalive 600", repl("keepalive=60\n", "keepalive=600\n"), []string{`keepalive: got "600", want "60"`}},
		{"keepalive missing", repl("keepalive=60\n", ""), []string{"keepalive: missing"}},
		{"no leftover cleanup", repl("delete_leftover_dirs=1", "delete_leftover_dirs=0"), []string{"delete_leftover_dirs"}},
		{"master host", repl("=buildbot.example.org", "=old.example.org"), []string{"buildmaster_host"}},
		{"master port", repl("port=9020", "port=9989"), []string{"port:"}},
		{"worker name", repl("workername=cpython-debian12-aws", "workername=other"), []string{"workername"}},
		{"password", repl("passwd=ok", "passwd=mismatch"), []string{`passwd: got "mismatch", want "ok"`}},
		{"password missing", repl("passwd=ok\n", ""), []string{"passwd: missing"}},
		{"info admin", repl("jane AT", "john AT"), []string{"info_admin"}},
		{"info admin missing", repl("info_admin=Jane Doe <jane AT example.org>\n", ""), []string{"info_admin: missing"}},
		{"info host absent", func(s string) string {
			s = strings.Replace(s, "info_host_present=yes", "info_host_present=no", 1)
			return strings.Replace(s, "info_host=Debian 12 on EC2 t3.medium (latentworker)\n", "", 1)
		}, []string{"info_host_present", "info_host: missing"}},
		{"service disabled", repl("service_enabled=enabled", "service_enabled=disabled"), []string{"service_enabled"}},
		{"service failed", repl("service_active=active", "service_active=failed"), []string{"service_active"}},
		{"tac world readable", repl("tac_mode=0600", "tac_mode=0644"), []string{"tac_mode"}},
		{"tac owned by root", repl("tac_owner=buildbot:buildbot", "tac_owner=root:root"), []string{"tac_owner"}},
		{"no tac", func(string) string {
			return "tac_present=no\ninfo_host_present=no\nservice_enabled=disabled\nservice_active=inactive\n"
		}, []string{"tac_present", "info_admin", "info_host_present", "info_host", "service_enabled", "service_active"}},
		{"several", func(s string) string {
			return repl("keepalive=60", "keepalive=600")(repl("passwd=ok", "passwd=mismatch")(s))
		}, []string{"keepalive", "passwd"}},
	} {
		f, err := ParseFacts([]byte(tc.edit(goodFacts)))
		if err != nil {
			t.Fatalf("%s: ParseFacts: %v", tc.desc, err)
		}
		err = f.Check(debian12, goldenWorker)
		var me *MismatchError
		if !errors.As(err, &me) {
			t.Errorf("%s: Check = %v; want a *MismatchError", tc.desc, err)
			continue
		}
		if len(me.Mismatches) != len(tc.want) {
			t.Errorf("%s: Check mismatches = %q; want %d: %q", tc.desc, me.Mismatches, len(tc.want), tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(me.Mismatches[i], w) {
				t.Errorf("%s: mismatch %d = %q; want it to mention %q", tc.desc, i, me.Mismatches[i], w)
			}
		}
		if !strings.Contains(err.Error(), goldenWorker.Name) {
			t.Errorf("%s: error %q does not name the worker", tc.desc, err)
		}
	}

	f, _ := ParseFacts([]byte(goodFacts))
	if err := f.Check(debian12, Worker{}); err == nil || len(fieldErrors(err)) == 0 {
		t.Errorf("Check(invalid worker) = %v; want the field errors", err)
	}
}

func repl(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test edit does not apply: " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// runHelper runs an embedded Python helper the way the scripts do: program
// on stdin, values in the environment.
func runHelper(t *testing.T, python, name string, env []string, args ...string) (string, error) {
	t.Helper()
	src, err := include(name)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, append([]string{"-"}, args...)...)
	cmd.Stdin = strings.NewReader(src + "\n")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "PYTHONIOENCODING=utf-8"}, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(err.Error() + ": " + stderr.String())
	}
	return string(out), nil
}

// TestPythonHelpers runs tacedit.py and facts.py on the buildbot.tac that
// Debian's buildbot-worker 3.7 create-worker writes, and checks the result
// with ParseFacts and Check.
func TestPythonHelpers(t *testing.T) {
	// The instance's python3 is /usr/bin/python3; prefer it to a PATH
	// shim (pyenv's adds a second per run).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = requireTool(t, "python3")
	}
	dir := t.TempDir()
	tac := filepath.Join(dir, "buildbot.tac")
	orig, err := os.ReadFile(filepath.Join("testdata", "buildbot-3.7.tac"))
	if err != nil {
		t.Fatal(err)
	}
	// Make the fixture need every fix: old master, default keepalive.
	src := strings.Replace(string(orig), "keepalive = 60", "keepalive = 600", 1)
	src = strings.Replace(src, "delete_leftover_dirs = 1", "delete_leftover_dirs = 0", 1)
	if err := os.WriteFile(tac, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	password := `pa'ss "w$(id)\ord` + "\u00e9"
	env := []string{
		"LW_MASTER_HOST=2001:db8::1", "LW_MASTER_PORT=9020",
		"LW_WORKER_NAME=" + goldenWorker.Name, "LW_WORKER_PASSWD=" + password,
	}
	out, err := runHelper(t, python, "tacedit.py", env, tac)
	if err != nil || out != "changed\n" {
		t.Fatalf("tacedit.py = %q, %v; want changed", out, err)
	}
	st, err := os.Stat(tac)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("buildbot.tac mode = %v, %v; want 0600", st.Mode(), err)
	}
	out, err = runHelper(t, python, "tacedit.py", env, tac)
	if err != nil || out != "unchanged\n" {
		t.Errorf("tacedit.py again = %q, %v; want unchanged", out, err)
	}
	edited, _ := os.ReadFile(tac)
	for _, want := range []string{"\nkeepalive = 60\n", "\ndelete_leftover_dirs = 1\n", "\nbuildmaster_host = '2001:db8::1'\n", "\nport = 9020\n"} {
		if !strings.Contains(string(edited), want) {
			t.Errorf("edited buildbot.tac lacks %q", want)
		}
	}
	if strings.Contains(string(edited), "placeholder") {
		t.Errorf("edited buildbot.tac still has the placeholder password")
	}

	info := filepath.Join(dir, "info")
	if err := os.Mkdir(info, 0o755); err != nil {
		t.Fatal(err)
	}
	w := goldenWorker
	w.Master = "[2001:db8::1]:9020"
	os.WriteFile(filepath.Join(info, "admin"), []byte(w.InfoAdmin()+"\n"), 0o644)
	os.WriteFile(filepath.Join(info, "host"), []byte(w.HostInfo+"\n"), 0o644)

	facts := func(expected string) Facts {
		t.Helper()
		out, err := runHelper(t, python, "facts.py", []string{"LW_EXPECTED_PASSWD=" + expected}, dir)
		if err != nil {
			t.Fatalf("facts.py: %v", err)
		}
		if strings.Contains(out, password) {
			t.Fatalf("facts.py printed the password")
		}
		f, err := ParseFacts([]byte(out + "service_enabled=enabled\nservice_active=active\n"))
		if err != nil {
			t.Fatalf("ParseFacts(facts.py output %q): %v", out, err)
		}
		return f
	}
	f := facts(password)
	f.TacOwner = "buildbot:buildbot" // the test does not run as buildbot
	if err := f.Check(debian12, w); err != nil {
		t.Errorf("Check after tacedit.py: %v", err)
	}
	if f := facts("wrong"); f.Passwd != "mismatch" {
		t.Errorf("passwd with a wrong expected password = %q; want mismatch", f.Passwd)
	}
	if f := facts(""); f.Passwd != "mismatch" {
		t.Errorf("passwd with an empty expected password = %q; want mismatch", f.Passwd)
	}

	// A tac whose settings are not plain top-level assignments is refused,
	// not half-edited.
	os.WriteFile(tac, []byte("keepalive = 600; port = 1\n"), 0o600)
	if out, err := runHelper(t, python, "tacedit.py", env, tac); err == nil {
		t.Errorf("tacedit.py on a mangled tac = %q, nil; want an error", out)
	}
	os.WriteFile(tac, []byte("def broken(:\n"), 0o600)
	if out, err := runHelper(t, python, "tacedit.py", env, tac); err == nil {
		t.Errorf("tacedit.py on a non-Python tac = %q, nil; want an error", out)
	}
	if f := facts(password); f.TacError == "" || f.Check(debian12, w) == nil {
		t.Errorf("facts on a non-Python tac = %+v; want tac_error and a failed Check", f)
	}
	os.Remove(tac)
	if f := facts(password); f.TacPresent != "no" {
		t.Errorf("facts without buildbot.tac: tac_present = %q; want no", f.TacPresent)
	}
}

var debian12 = platform.MustLookup("debian-12")
