package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/labtest"
)

// TestBakeFleet bakes three workers with one command, one of whose base
// AMI does not exist: the other two complete, the third fails alone, the
// exit code says so, every event names its worker, and no run leaves a
// key pair, security group or instance behind.
func TestBakeFleet(t *testing.T) {
	labtest.Require(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("fleet-pw-"+fleet.NewRunID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	workers := []string{"fleet-a", "fleet-b", "fleet-c"}
	var masterFile strings.Builder
	masterFile.WriteString("[master]\n")
	for _, w := range workers {
		fmt.Fprintf(&masterFile, "[[master.workers]]\nname = %q\npassword_file = %q\n", w, pw)
	}
	l := labtest.Start(t, masterFile.String())
	bin := latentworkerBin(t)
	args := []string{"bake", "--json", "--terminate-builder", "--no-verify"}
	for i, w := range workers {
		extra := "[image]\ncpython_build_deps = false\n"
		if i == 2 {
			extra += "base_ami = \"ami-0123456789abcdef0\"\n" // no such image
		}
		cfg := filepath.Join(dir, w+".toml")
		body := fmt.Sprintf("[worker]\nname = %q\nmaster = %q\nadmin_name = \"Fleet\"\nadmin_email = \"fleet@example.org\"\npassword_file = %q\n[aws]\ninstance_type = \"t3.small\"\n%s", w, l.State.MasterPB, pw, extra)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--fleet", cfg)
	}
	cmd := exec.CommandContext(context.Background(), bin, args...)
	cmd.Dir = dir
	cmd.Env = append(l.Environ(), "LATENTWORKER_PASSWORD=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != exitFailure {
		t.Fatalf("fleet bake with one bad worker: exit %d; want %d\n%s\n%s", code, exitFailure, out, stderr.String())
	}
	evs := events(t, out)
	results, runs := map[string]string{}, map[string]string{}
	for _, e := range evs {
		w, _ := e["worker"].(string)
		if e["type"] != "summary" && w == "" {
			t.Errorf("event without its worker: %v", e)
		}
		switch e["type"] {
		case "run":
			runs[w], _ = e["run_id"].(string)
		case "result":
			results[w], _ = e["image_id"].(string)
		}
	}
	last := evs[len(evs)-1]
	if last["type"] != "summary" || last["failed"] != float64(1) || last["succeeded"] != float64(2) {
		t.Errorf("last event %v; want a summary with 1 failed, 2 succeeded", last)
	}
	if results["fleet-a"] == "" || results["fleet-b"] == "" || results["fleet-c"] != "" {
		t.Errorf("results %v; want images for fleet-a and fleet-b only", results)
	}
	for w, run := range runs {
		for _, r := range labtest.RunResources(t, l.EC2(""), run) {
			if !strings.HasPrefix(r, "image ") && !strings.HasPrefix(r, "snapshot ") {
				t.Errorf("worker %s's run %s left %s", w, run, r)
			}
		}
	}
}
