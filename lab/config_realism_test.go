package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealismSection: the lab file's [realism] is read knob by knob, off
// when absent, and a bad value or an unknown knob is refused by name.
func TestRealismSection(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "lab.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write("listen = \"127.0.0.1:4570\"\n"))
	if err != nil || c.Realism.Enabled() {
		t.Fatalf("no [realism]: %+v, %v; want it off", c.Realism, err)
	}
	c, err = LoadConfig(write(`[realism]
throttle = 0.3
lost_answers = 0.05
fault_actions = ["CreateSecurityGroup"]
consistency = "5s"
console_delay = "30s"
latest_nitro_only = true
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Realism
	if r.Throttle != 0.3 || r.LostAnswers != 0.05 || r.ServerErrors != 0 || len(r.FaultActions) != 1 ||
		r.Consistency.Duration != 5*time.Second || r.ConsoleDelay.Duration != 30*time.Second || r.BootDelay.Duration != 0 ||
		!r.LatestNitroOnly || !r.Enabled() {
		t.Errorf("[realism] read as %+v", r)
	}
	for body, want := range map[string]string{
		"[realism]\nthrottle = 1.2\n":          "realism.throttle",
		"[realism]\nconsistency = \"soon\"\n":  "soon",
		"[realism]\nthrotle = 0.1\n":           "realism.throtle",
		"[realism]\nfault_services = [\"s3\"]": "realism.fault_services",
	} {
		if _, err := LoadConfig(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want an error naming %s", body, err, want)
		}
	}
}
