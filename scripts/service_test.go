package scripts

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/platform"
)

// serviceScript renders one of the service files the configure half writes
// through a quoted here-document (so that shellcheck does not see them in
// the configure script itself).
func serviceScript(t *testing.T, p *platform.Platform, name string) []byte {
	t.Helper()
	tmpl, _, err := templates(p)
	if err != nil {
		t.Fatal(err)
	}
	data, err := workerData(p, goldenWorker)
	if err != nil {
		t.Fatal(err)
	}
	data["P"] = p
	var buf bytes.Buffer
	if err := tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		t.Fatalf("render %s for %s: %v", name, p.Name, err)
	}
	return buf.Bytes()
}

// TestServiceScripts: the SysV init script (bash, the guide's shape) and
// the OpenRC service pass shellcheck, and the configure half writes them
// as they are rendered.
func TestServiceScripts(t *testing.T) {
	shellcheck := requireTool(t, "shellcheck")
	for _, tc := range []struct {
		platform, name, shell string
		exclude               string
		want                  []string
	}{
		{"debian-12-sysvinit", "sysv_init_script", "bash", "", []string{
			"#!/bin/bash\n", "# Provides:          buildbot-worker\n", "# Default-Start:     2 3 4 5\n",
			". /etc/default/buildbot-worker", `"$WORKER_RUNNER" "$action" $quiet ${WORKER_OPTIONS[$n]} "${WORKER_BASEDIR[$n]}"`,
		}},
		// openrc-run reads the variables and calls the functions.
		{"alpine", "openrc_script", "sh", "SC2034,SC2329", []string{
			"#!/sbin/openrc-run\n", "supervisor=supervise-daemon\n", `command_args="start --nodaemon $worker_dir"`,
		}},
	} {
		p := platform.MustLookup(tc.platform)
		body := serviceScript(t, p, tc.name)
		for _, w := range tc.want {
			if !bytes.Contains(body, []byte(w)) {
				t.Errorf("%s for %s lacks %q", tc.name, tc.platform, w)
			}
		}
		args := []string{"-s", tc.shell, "-f", "gcc"}
		if tc.exclude != "" {
			args = append(args, "--exclude="+tc.exclude)
		}
		cmd := exec.Command(shellcheck, append(args, "-")...)
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s (%s): %v\n%s", tc.name, tc.platform, err, out)
		}
		setup, err := Setup(p, goldenWorker)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(setup, body) {
			t.Errorf("Setup(%s) does not write %s as rendered", tc.platform, tc.name)
		}
	}
	// Only the platform's own service is in its scripts.
	for name, absent := range map[string][]string{
		"debian-12":          {"/etc/init.d/buildbot-worker", "#!/sbin/openrc-run"},
		"debian-12-sysvinit": {"#!/sbin/openrc-run"},
		"alpine":             {"update-rc.d buildbot-worker"},
	} {
		body, err := Setup(platform.MustLookup(name), goldenWorker)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range absent {
			if strings.Contains(string(body), a) {
				t.Errorf("Setup(%s) contains %q", name, a)
			}
		}
	}
}
