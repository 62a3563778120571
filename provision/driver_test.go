package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/scripts"
)

// testPassword is recognisable anywhere it could leak.
const testPassword = "s3cret-Pw-7f3a9c 'quoted' $HOME"

func testWorker() scripts.Worker {
	return scripts.Worker{
		Name:       "lw-provision-test-absent",
		Master:     "buildbot-api.python.org:9020",
		AdminName:  "Test Admin",
		AdminEmail: "admin@example.com",
		HostInfo:   "provision package test",
	}
}

func TestDriverRunScript(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	var progress syncBuffer
	d := &Driver{Platform: debian12, Progress: &progress}
	script := []byte("#!/bin/sh\nset -eu\necho \"progress on stderr\" >&2\nprintf 'stdout line\\nno newline'\n")
	if err := d.RunScript(ctx, c, "Extra Script #1", script); err != nil {
		t.Fatalf("RunScript = %v", err)
	}
	for _, want := range []string{"progress on stderr\n", "stdout line\n", "no newline\n"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress %q lacks %q", progress.String(), want)
		}
	}
	assertNoScriptsLeft(t, "extra-script-1")

	// A failing script: an *ExitError with its stderr, and still removed.
	err := d.RunScript(ctx, c, "extra-script-1", []byte("echo 'no such package' >&2\nexit 7\n"))
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 7 || !strings.Contains(ee.Stderr, "no such package") {
		t.Fatalf("failing RunScript = %v; want *ExitError status 7 with its stderr", err)
	}
	if !strings.Contains(err.Error(), "extra-script-1 script") || !strings.Contains(err.Error(), s.addr) {
		t.Errorf("error %q does not name the script and the address", err)
	}
	assertNoScriptsLeft(t, "extra-script-1")
}

// assertNoScriptsLeft checks that no uploaded script called name remains
// (sshd runs on this host, so the remote /tmp is ours).
func assertNoScriptsLeft(t *testing.T, name string) {
	t.Helper()
	left, _ := filepath.Glob("/tmp/latentworker-" + name + "-*.sh")
	if len(left) > 0 {
		t.Errorf("scripts left behind: %v", left)
	}
}

// TestDriverPasswordNeverLeaks runs a hostile script that receives the
// password, prints it on stdout and stderr, records the argv of every
// process on the host while it runs, and fails.
func TestDriverPasswordNeverLeaks(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	argv := filepath.Join(t.TempDir(), "argv")
	script := `#!/bin/sh
IFS= read -r pw
for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f"; echo; done >` + shellQuote(argv) + ` 2>/dev/null
echo "got: $pw"
echo "error: password $pw rejected" >&2
exit 3
`
	var progress syncBuffer
	d := &Driver{Platform: debian12, Progress: &progress}
	err := d.run(ctx, c, "leaky", []byte(script), testPassword, nil)
	if err == nil {
		t.Fatal("run(failing script) = nil; want an error")
	}
	if strings.Contains(err.Error(), testPassword) {
		t.Errorf("error contains the password: %q", err)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 3 {
		t.Fatalf("run = %v; want an *ExitError with status 3", err)
	}
	if strings.Contains(ee.Stderr, testPassword) || !strings.Contains(ee.Stderr, "password [redacted] rejected") {
		t.Errorf("ExitError.Stderr = %q; want the password redacted", ee.Stderr)
	}
	if p := progress.String(); strings.Contains(p, testPassword) || !strings.Contains(p, "got: [redacted]") {
		t.Errorf("progress = %q; want the password redacted", p)
	}
	procs, rerr := os.ReadFile(argv)
	if rerr != nil {
		t.Fatalf("the script did not record the process list: %v", rerr)
	}
	if !strings.Contains(string(procs), "sh /tmp/latentworker-leaky-") {
		t.Errorf("process list lacks the script itself; is it complete?\n%s", procs)
	}
	if strings.Contains(string(procs), testPassword) {
		t.Errorf("the password is in a process's argv")
	}
	assertNoScriptsLeft(t, "leaky")
}

// TestDriverVerify runs the real Verify script against this host, which
// has no such worker: the facts say so and the check fails, and the
// password is nowhere in the error.
func TestDriverVerify(t *testing.T) {
	s := newSSHD(t)
	s.start()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the Verify script needs /usr/bin/python3")
	}
	ctx := testContext(t)
	c := s.dial(ctx)
	var progress syncBuffer
	d := &Driver{Platform: debian12, Progress: &progress}
	facts, err := d.Verify(ctx, c, testWorker(), testPassword)
	var mm *scripts.MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("Verify(absent worker) = %v; want a *scripts.MismatchError", err)
	}
	if facts.TacPresent != "no" || facts.WorkerDir != debian12.WorkerDir(testWorker().Name) {
		t.Errorf("Verify facts = %+v; want tac_present=no for %s", facts, debian12.WorkerDir(testWorker().Name))
	}
	if strings.Contains(err.Error(), testPassword) || strings.Contains(progress.String(), testPassword) {
		t.Errorf("the password leaked into the error or the progress")
	}
	assertNoScriptsLeft(t, "verify")
}

// TestDriverRebootRequired runs the real, read-only RebootRequired script
// on this host: either answer is fine, an error is not.
func TestDriverRebootRequired(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	var progress syncBuffer
	d := &Driver{Platform: platform.MustLookup("ubuntu-24.04"), Progress: &progress}
	required, err := d.RebootRequired(ctx, c)
	if err != nil {
		t.Fatalf("RebootRequired = %v", err)
	}
	want := "latentworker: no reboot required\n"
	if required {
		want = "latentworker: reboot required:"
	}
	if !strings.Contains(progress.String(), want) {
		t.Errorf("RebootRequired = %v but progress is %q", required, progress.String())
	}
}

func TestDriverRefusesBadInput(t *testing.T) {
	c := &Client{addr: "192.0.2.1:22", user: "admin"} // never reached
	d := &Driver{Platform: debian12}
	for _, pw := range []string{"", "two\nlines", "cr\r", "nul\x00"} {
		if err := d.Setup(t.Context(), c, testWorker(), pw); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("Setup(password %q) = %v; want ErrInvalidPassword", pw, err)
		} else if pw != "" && strings.Contains(err.Error(), pw) {
			t.Errorf("Setup error %q contains the password", err)
		}
		if _, err := d.Verify(t.Context(), c, testWorker(), pw); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("Verify(password %q) = %v; want ErrInvalidPassword", pw, err)
		}
	}
	other := &Driver{Platform: &platform.Platform{Name: "plan9", Family: "plan9", Shell: platform.POSIX}}
	if err := other.Updates(t.Context(), c); !errors.Is(err, scripts.ErrUnsupported) {
		t.Errorf("Updates on platform plan9 = %v; want scripts.ErrUnsupported", err)
	}
	if err := d.Generalize(t.Context(), c, "not a key"); !errors.Is(err, scripts.ErrInvalidKey) {
		t.Errorf("Generalize(bad key) = %v; want scripts.ErrInvalidKey", err)
	}
}

func TestShellCommands(t *testing.T) {
	tests := []struct {
		platform, user, path, want string
	}{
		{"debian-12", "root", "/tmp/latentworker-setup-00.sh", "sh '/tmp/latentworker-setup-00.sh'"},
		{"debian-12", "admin", "/tmp/latentworker-setup-00.sh", "sudo -n sh '/tmp/latentworker-setup-00.sh'"},
		{"ubuntu-24.04", "ubuntu", "/tmp/it's.sh", `sudo -n sh '/tmp/it'\''s.sh'`},
	}
	for _, tt := range tests {
		sh, err := ShellFor(platform.MustLookup(tt.platform), tt.user)
		if err != nil {
			t.Fatal(err)
		}
		if got := sh.RunScript(tt.path); got != tt.want {
			t.Errorf("RunScript(%s, %q, %q) = %q; want %q", tt.platform, tt.user, tt.path, got, tt.want)
		}
	}
	for _, tt := range []struct {
		root platform.Root
		want string
	}{
		{platform.Sudo, "sudo -n systemctl reboot"},
		{platform.Doas, "doas -n systemctl reboot"},
		{platform.SuRoot, "su root -c 'systemctl reboot'"},
	} {
		sh := &POSIXShell{User: "admin", Root: tt.root, RebootCmd: "systemctl reboot"}
		if got := sh.Reboot(); got != tt.want {
			t.Errorf("Reboot(root %q) = %q; want %q", tt.root, got, tt.want)
		}
	}
	ps := PowerShellShell{}
	if got, want := ps.RunScript("C:/Windows/Temp/it's.ps1"), "powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass -File 'C:/Windows/Temp/it''s.ps1'; exit $LASTEXITCODE"; got != want {
		t.Errorf("PowerShell RunScript = %q; want %q", got, want)
	}
}

func TestOSName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n", "Debian GNU/Linux 12 (bookworm)"},
		{"PRETTY_NAME='Odd'\n", "Odd"},
		{"FreeBSD 14.1-RELEASE\n", "FreeBSD 14.1-RELEASE"},
		{"", ""},
	} {
		if got := osName([]byte(tc.in)); got != tc.want {
			t.Errorf("osName(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestScriptPath(t *testing.T) {
	tests := []struct{ name, label string }{
		{"setup", "setup"},
		{"Extra Script #1", "extra-script-1"},
		{"../../etc/passwd", "etc-passwd"},
		{"", "script"},
		{"!!!", "script"},
		{strings.Repeat("a", 100), strings.Repeat("a", 32)},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		p, err := scriptPath(&POSIXShell{TempDir: "/tmp"}, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^/tmp/latentworker-` + regexp.QuoteMeta(tt.label) + `-[0-9a-f]{24}\.sh$`)
		if !re.MatchString(p) {
			t.Errorf("scriptPath(%q) = %q; want /tmp/latentworker-%s-RANDOM.sh", tt.name, p, tt.label)
		}
		if seen[p] {
			t.Errorf("scriptPath(%q) = %q twice", tt.name, p)
		}
		seen[p] = true
	}
}

func TestLineWriter(t *testing.T) {
	var out []string
	w := &lineWriter{w: writerFunc(func(p []byte) (int, error) {
		out = append(out, string(p))
		return len(p), nil
	}), secret: "hunter2"}
	for _, chunk := range []string{"one\ntw", "o hun", "ter2\r\nthree", " and hunter2"} {
		w.Write([]byte(chunk))
	}
	w.Flush()
	want := []string{"one\n", "two [redacted]\n", "three and [redacted]\n"}
	if strings.Join(out, "|") != strings.Join(want, "|") {
		t.Errorf("lineWriter wrote %q; want %q", out, want)
	}
	(&lineWriter{}).Write([]byte("nil writer discards\n"))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var debian12 = platform.MustLookup("debian-12")

// TestDriverSurvivesDroppedConnection: a script runs detached; its SSH
// connection is cut three times while it runs (as a reset would); the
// driver reconnects, follows it again from where it was and returns its
// real exit status with all its output, once, in order. The secret still
// reaches the script only on stdin, and no job directory is left.
func TestDriverSurvivesDroppedConnection(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	var progress syncBuffer
	var drops atomic.Int32
	d := &Driver{Platform: debian12, Progress: &progress}
	// Cut the connection three times while the script runs.
	stop := make(chan struct{})
	defer close(stop)
	cur := make(chan *Client, 1)
	cur <- c
	go func() {
		for drops.Load() < 3 {
			select {
			case <-stop:
				return
			case <-time.After(700 * time.Millisecond):
			}
			progressed := strings.Count(progress.String(), "tick ")
			if progressed > int(drops.Load())*3 {
				cl := <-cur
				cl.ssh.Conn.Close()
				drops.Add(1)
				cur <- cl
			}
		}
	}()
	d.Reconnect = func(ctx context.Context, old *Client) (*Client, error) {
		old.Close()
		nc := s.dial(ctx)
		<-cur
		cur <- nc
		return nc, nil
	}
	script := []byte("#!/bin/sh\nIFS= read -r pw\n[ \"$pw\" = 's3cret-pw' ] || exit 9\nexec </dev/null\nfor i in $(seq 1 16); do echo \"tick $i\" >&2; sleep 0.3; done\necho done\nexit 4\n")
	err := d.run(ctx, c, "drop-test", script, "s3cret-pw", nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 4 {
		t.Fatalf("run = %v; want the script's own status 4 after %d drops", err, drops.Load())
	}
	if drops.Load() < 3 {
		t.Errorf("the connection was cut %d times; want 3", drops.Load())
	}
	out := progress.String()
	for i := 1; i <= 16; i++ {
		if n := strings.Count(out, fmt.Sprintf("tick %d\n", i)); n != 1 {
			t.Errorf("tick %d appears %d times in the progress; want once:\n%s", i, n, out)
		}
	}
	if !strings.Contains(out, "done\n") || strings.Contains(out, "s3cret-pw") {
		t.Errorf("progress = %q; want done, and never the password", out)
	}
	if left, _ := filepath.Glob("/run/latentworker-job-drop-test-*"); len(left) > 0 {
		t.Errorf("job directories left: %v", left)
	}
	assertNoScriptsLeft(t, "drop-test")
}

// TestDriverJobUmask: a detached script runs with the umask a command run
// through sudo has (022), not the starter's 077: files it creates for
// other users (a venv, a unit) stay readable.
func TestDriverJobUmask(t *testing.T) {
	s := newSSHD(t)
	s.start()
	ctx := testContext(t)
	c := s.dial(ctx)
	var progress syncBuffer
	d := &Driver{Platform: debian12, Progress: &progress}
	if err := d.RunScript(ctx, c, "umask", []byte("umask\n")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "0022\n") {
		t.Errorf("a script's umask: %q; want 0022", progress.String())
	}
}
