package scripts

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/platform"
)

func TestPSQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"plain", "'plain'"},
		{"it's", "'it''s'"},
		{"$(Remove-Item C:\\) `n \"x\" ${env:PATH} @a ;|&", "'$(Remove-Item C:\\) `n \"x\" ${env:PATH} @a ;|&'"},
		{"O\u2019Brien \u2018x\u2019 \u201a \u201b", "'O\u2019\u2019Brien \u2018\u2018x\u2019\u2019 \u201a\u201a \u201b\u201b'"},
		{"a\nb", "'a\nb'"},
	} {
		got, err := psQuote(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("psQuote(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := psQuote("a\x00b"); err == nil {
		t.Errorf("psQuote with NUL: no error")
	}
}

// TestWindowsScripts checks what the issue asks of the Windows scripts:
// the password only from stdin, the guide's Scheduled Task, python.org's
// pinned installer, long paths, and updates that end in a reboot check.
func TestWindowsScripts(t *testing.T) {
	for _, name := range []string{"windows-2022", "windows-2025"} {
		p := platform.MustLookup(name)
		scripts := map[string]string{}
		for _, r := range renderAll(t, p, goldenWorker) {
			if !bytes.HasPrefix(r.body, utf8BOM) && !strings.HasSuffix(r.name, "-userdata") {
				t.Errorf("%s: no UTF-8 byte order mark (Windows PowerShell would read it as ANSI)", r.name)
			}
			scripts[strings.TrimPrefix(r.name, name+"-")] = string(r.body)
		}
		setup := scripts["setup"]
		for _, want := range []string{
			"$password = [Console]::In.ReadLine()",
			"$env:LW_WORKER_PASSWD = $password",
			"'latentworker-password-placeholder'",
			"'--keepalive=60', '--delete-leftover-dirs'",
			"'pip', 'install', '--disable-pip-version-check', '--no-input', '--upgrade', 'pywin32', $PipRequirement)",
			"$PipRequirement = 'buildbot-worker'",
			"'InstallAllUsers=1'", "'/quiet'",
			"$PythonSHA256 = '" + p.Python.SHA256 + "'",
			"$PythonVersion = '" + p.Python.Version + "'",
			"Get-AuthenticodeSignature",
			"-Name 'LongPathsEnabled'",
			"New-ScheduledTaskTrigger -AtStartup",
			"New-ScheduledTaskAction -Execute $BuildbotWorker -Argument ('start \"{0}\"' -f $WorkerDir) -WorkingDirectory $WorkersDir",
			"-User $account -Password $plain -RunLevel Limited",
			"-ExecutionTimeLimit ([TimeSpan]::Zero)",
			"$WorkersDir = 'C:\\buildbot'",
			"$WorkerDir = 'C:\\buildbot\\cpython-debian12-aws'",
			"$TaskName = 'buildbot-worker-cpython-debian12-aws'",
			"New-LocalUser -Name $WorkerUser",
		} {
			if !strings.Contains(setup, want) {
				t.Errorf("%s setup lacks %q", name, want)
			}
		}
		// The password is used in exactly two places: read, then put in
		// the helper's environment; never in an argument list.
		for _, l := range strings.Split(setup, "\n") {
			if strings.Contains(l, "$password") && !strings.Contains(l, "ReadLine()") &&
				!strings.Contains(l, "IsNullOrEmpty($password)") && !strings.Contains(l, "$env:LW_WORKER_PASSWD = $password") &&
				!strings.Contains(l, "$password = $null") {
				t.Errorf("%s setup uses the password elsewhere: %q", name, l)
			}
		}
		if !strings.Contains(scripts["updates"], "Invoke-WindowsUpdateRound") ||
			!strings.Contains(scripts["reboot-required"], "Invoke-WindowsUpdateRound") ||
			!strings.Contains(scripts["reboot-required"], "exit 10") {
			t.Errorf("%s: updates and reboot-required must both run Windows Update rounds", name)
		}
		gen := scripts["generalize"]
		if !strings.Contains(gen, "'reset', '--clean'") || strings.Contains(strings.ToLower(gen), "sysprep.exe") {
			t.Errorf("%s generalize: want ec2launch reset --clean and no sysprep", name)
		}
		verify := scripts["verify"]
		if !strings.Contains(verify, "$expected = [Console]::In.ReadLine()") || !strings.Contains(verify, "Write-Fact 'tac_mode' 'private'") {
			t.Errorf("%s verify: reads the password from stdin and reports the ACL", name)
		}
	}
}

func TestUserData(t *testing.T) {
	p := platform.MustLookup("windows-2022")
	ud, err := UserData(p, testRSAKey)
	if err != nil {
		t.Fatal(err)
	}
	s := string(ud)
	_, blob, _ := parsePublicKey(testRSAKey)
	for _, want := range []string{
		"<powershell>\n", "</powershell>\n",
		"$PublicKey = 'ssh-rsa " + blob + "'",
		"Add-WindowsCapability -Online -Name 'OpenSSH.Server~~~~0.0.1.0'",
		"-Profile Any",
		"administrators_authorized_keys",
		"/inheritance:r /grant '*S-1-5-18:(F)' /grant '*S-1-5-32-544:(F)'",
		"DefaultShell",
		"-----BEGIN LATENTWORKER SSH HOST KEY FINGERPRINTS-----",
		"-----END LATENTWORKER SSH HOST KEY FINGERPRINTS-----",
		"COM1",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("user data lacks %q", want)
		}
	}
	if strings.Contains(s, "latentworker-temp") {
		t.Errorf("user data carries the key's comment")
	}
	for _, secret := range []string{"passw", "LW_WORKER", "aws_secret", "BEGIN OPENSSH PRIVATE", "BEGIN RSA PRIVATE"} {
		if strings.Contains(strings.ToLower(s), strings.ToLower(secret)) {
			t.Errorf("user data mentions %q: it must hold no secret", secret)
		}
	}
	if len(ud) > 16*1024 {
		t.Errorf("user data is %d bytes; EC2 allows 16 KiB", len(ud))
	}
	for _, name := range []string{"debian-12", "freebsd-14", "macos", "openbsd"} {
		if _, err := UserData(platform.MustLookup(name), testKey); !errors.Is(err, ErrUnsupported) {
			t.Errorf("UserData(%s) error = %v; want ErrUnsupported", name, err)
		}
	}
	if _, err := UserData(p, "ssh-rsa AAAA';Remove-Item C:\\ -Recurse;'"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("UserData with a bad key: error = %v; want ErrInvalidKey", err)
	}
}

// TestUnixScripts checks the guide's steps per BSD and macOS.
func TestUnixScripts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wants []string
	}{
		{"freebsd-14", []string{
			"pkg install -y \"$PACKAGE\"", "PACKAGE='devel/py-buildbot-worker'",
			"sysrc buildbot_worker_enable=YES", "sysrc buildbot_worker_profiles=\"$LW_PROFILE\"",
			"sysrc \"buildbot_worker_${LW_PROFILE}_basedir=$WORKER_DIR\"",
			"WORKER_DIR='/var/db/buildbot/workers/cpython-debian12-aws'",
			"service \"$SERVICE\" start \"$LW_PROFILE\"", "su -m \"$WORKER_USER\" -c",
		}},
		{"openbsd", []string{
			"pkg_add -I \"$PACKAGE\"", "rcctl enable \"$SERVICE\"", "rcctl set \"$SERVICE\" flags \"$WORKER_DIR\"",
			"WORKER_USER='_buildslave'", "WORKER_DIR='/var/buildslave/cpython-debian12-aws'",
		}},
		{"macos", []string{
			"-m pip install --disable-pip-version-check --no-input --upgrade \"$PIP_REQUIREMENT\"", "PIP_REQUIREMENT='buildbot-worker'",
			"/Library/LaunchDaemons/net.buildbot.worker.plist", "<key>UserName</key>", "<key>WorkingDirectory</key>",
			"run_worker.sh", "exec twistd --nodaemon --python=buildbot.tac", "WORKER_GROUP='staff'",
			"dscl . -create \"/Users/$WORKER_USER\" PrimaryGroupID 20",
		}},
	} {
		p := platform.MustLookup(tc.name)
		body, err := Setup(p, goldenWorker)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tc.wants {
			if !strings.Contains(string(body), want) {
				t.Errorf("%s setup lacks %q", tc.name, want)
			}
		}
		if !strings.Contains(string(body), "IFS= read -r LW_WORKER_PASSWD") {
			t.Errorf("%s setup does not read the password from stdin", tc.name)
		}
	}
	for name, want := range map[string]string{
		"freebsd-14": "freebsd-update --not-running-from-cron install",
		"openbsd":    "syspatch >&2",
		"macos":      "softwareupdate --install --all",
	} {
		body, err := Updates(platform.MustLookup(name))
		if err != nil || !strings.Contains(string(body), want) {
			t.Errorf("%s updates lacks %q (%v)", name, want, err)
		}
	}
	for name, want := range map[string]string{
		"freebsd-14": "pkg install -y",
		"openbsd":    "pkg_add -I",
		"macos":      "softwareupdate --install \"$lw_label\"",
	} {
		body, err := BuildDeps(platform.MustLookup(name))
		if err != nil || !strings.Contains(string(body), want) {
			t.Errorf("%s builddeps lacks %q (%v)", name, want, err)
		}
	}
}

func TestCheckPerFamily(t *testing.T) {
	host, port, _ := goldenWorker.MasterHostPort()
	base := map[string]string{
		"tac_present": "yes", "keepalive": "60", "delete_leftover_dirs": "1", "buildmaster_host": host,
		"port": strconv.Itoa(port), "workername": goldenWorker.Name, "passwd": "ok",
		"info_admin": goldenWorker.InfoAdmin(), "info_host_present": "yes", "info_host": goldenWorker.HostInfo,
		"service_enabled": "enabled", "service_active": "active",
	}
	for _, tc := range []struct {
		platform, mode, owner string
		extra                 map[string]string
		ok                    bool
	}{
		{"windows-2025", "private", "buildbot", nil, true},
		{"windows-2025", "0600", "buildbot:buildbot", nil, false},
		{"macos", "0600", "buildbot:staff", nil, true},
		{"macos", "0600", "buildbot:buildbot", nil, false},
		{"openbsd", "0600", "_buildslave:_buildslave", nil, true},
		// Refused by the master after starting in this boot, without systemd.
		{"freebsd-14", "0600", "buildbot:buildbot", map[string]string{"service_active": "inactive", "service_started_this_boot": "yes", "worker_refused": "yes"}, true},
		{"freebsd-14", "0600", "buildbot:buildbot", map[string]string{"service_active": "inactive", "service_started_this_boot": "no", "worker_refused": "yes"}, false},
		{"windows-2022", "private", "buildbot", map[string]string{"service_active": "inactive", "service_started_this_boot": "yes", "worker_refused": "yes", "service_exit_status": "1"}, false},
	} {
		var out strings.Builder
		facts := map[string]string{"tac_mode": tc.mode, "tac_owner": tc.owner}
		for k, v := range base {
			facts[k] = v
		}
		for k, v := range tc.extra {
			facts[k] = v
		}
		for k, v := range facts {
			out.WriteString(k + "=" + v + "\n")
		}
		f, err := ParseFacts([]byte(out.String()))
		if err != nil {
			t.Fatal(err)
		}
		err = f.Check(platform.MustLookup(tc.platform), goldenWorker)
		if (err == nil) != tc.ok {
			t.Errorf("%s with mode %s owner %s %v: Check = %v; want ok=%v", tc.platform, tc.mode, tc.owner, tc.extra, err, tc.ok)
		}
	}
}

// TestPowerShellParses runs hack/pslint (tree-sitter's PowerShell grammar)
// on every rendered Windows script and user data body, then on a copy of
// a template with one parenthesis wrong, which must fail naming the file
// and the line.
func TestPowerShellParses(t *testing.T) {
	if testing.Short() {
		t.Skip("loading the grammar costs seconds; make lint parses them too")
	}
	node := requireTool(t, "node")
	lint, err := filepath.Abs("../hack/pslint/pslint.cjs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("../hack/pslint/node_modules/web-tree-sitter"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("hack/pslint's npm packages are required when CI=true (make deps): %v", err)
		}
		t.Skip("hack/pslint's npm packages are not installed (make deps)")
	}
	dir := t.TempDir()
	var files []string
	for _, p := range scriptedPlatforms() {
		if p.Shell != platform.PowerShell {
			continue
		}
		for _, w := range []Worker{goldenWorker, hostileWorker} {
			for i, r := range renderAll(t, p, w) {
				body := r.body
				if strings.HasSuffix(r.name, "-userdata") {
					body = bytes.TrimSuffix(bytes.TrimPrefix(body, []byte("<powershell>\n")), []byte("</powershell>\n"))
				}
				f := filepath.Join(dir, fmt.Sprintf("%s-%d-%s.ps1", r.name, i, strings.Fields(w.AdminName)[0]))
				if err := os.WriteFile(f, body, 0o644); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
		}
	}
	tmpl, err := os.ReadFile("windows/setup.ps1.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(tmpl), "\n")
	n := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "if ($have -ne $PythonVersion) {") })
	if n < 0 {
		t.Fatal("setup.ps1.tmpl: the line to break is gone")
	}
	lines[n] = strings.Replace(lines[n], ") {", ") (", 1)
	broken := filepath.Join(dir, "setup.ps1.tmpl")
	if err := os.WriteFile(broken, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	// One run (the grammar is slow to load): only the broken template
	// may be named.
	out, err := exec.Command(node, append([]string{lint, broken}, files...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("%s:%d:", broken, n+1)) {
		t.Errorf("pslint on a broken template: %v; want a failure naming %s:%d\n%s", err, broken, n+1, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, broken+":") {
			t.Errorf("pslint named another file: %s", l)
		}
	}
}
