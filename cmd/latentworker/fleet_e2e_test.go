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

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/labtest"
)

// TestBakeFleet bakes three workers with one command. First the third
// file names a base AMI that does not exist, which only AWS can tell: the
// whole fleet stops before anything is created, exit 2 (before, the other
// two baked and the fleet exited 1). Then the third worker's type is one
// whose launches end terminated (the lab's insufficient_capacity): the
// other two complete, the third fails alone naming the state reason, the
// exit code says so, every event names its worker, and no run leaves a key
// pair, security group or instance behind.
func TestBakeFleet(t *testing.T) {
	labtest.Require(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("fleet-pw-"+fleet.NewRunID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	workers := []string{"fleet-a", "fleet-b", "fleet-c"}
	var masterFile strings.Builder
	masterFile.WriteString("[realism]\ninsufficient_capacity = [\"t3.micro\"]\n[master]\n")
	for _, w := range workers {
		fmt.Fprintf(&masterFile, "[[master.workers]]\nname = %q\npassword_file = %q\n", w, pw)
	}
	l := labtest.Start(t, masterFile.String())
	bin := latentworkerBin(t)
	fleetBake := func(thirdType, thirdImage string) ([]byte, string, int) {
		t.Helper()
		args := []string{"bake", "--json", "--terminate-builder", "--no-verify"}
		for i, w := range workers {
			typ, image := "t3.small", ""
			if i == 2 {
				typ, image = thirdType, thirdImage
			}
			extra := fmt.Sprintf("[aws]\ninstance_type = %q\n[image]\ncpython_build_deps = false\n%s", typ, image)
			cfg := filepath.Join(dir, w+".toml")
			body := fmt.Sprintf("[worker]\nname = %q\nmaster = %q\nadmin_name = \"Fleet\"\nadmin_email = \"fleet@example.org\"\npassword_file = %q\n%s", w, l.State.MasterPB, pw, extra)
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
		return out, stderr.String(), cmd.ProcessState.ExitCode()
	}

	out, stderr, code := fleetBake("t3.small", "base_ami = \"ami-0123456789abcdef0\"\n") // no such image
	if code != exitBadInput || !strings.Contains(string(out), "fleet-c.toml") || !strings.Contains(string(out), "ami-0123456789abcdef0") {
		t.Fatalf("fleet bake with a base AMI that does not exist: exit %d; want %d naming the file and the AMI\n%s\n%s", code, exitBadInput, out, stderr)
	}
	if strings.Contains(string(out), `"type":"run"`) {
		t.Errorf("a bake started although a file was bad:\n%s", out)
	}
	kps, err := l.EC2("").DescribeKeyPairs(context.Background(), &ec2.DescribeKeyPairsInput{})
	if err != nil || len(kps.KeyPairs) != 0 {
		t.Errorf("after the refused fleet: key pairs %v, %v; want none", kps, err)
	}

	out, stderr, code = fleetBake("t3.micro", "")
	if code != exitFailure {
		t.Fatalf("fleet bake with one worker whose launch ends terminated: exit %d; want %d\n%s\n%s", code, exitFailure, out, stderr)
	}
	if !strings.Contains(string(out), "Server.InsufficientInstanceCapacity") {
		t.Errorf("fleet-c's failure does not name the state reason:\n%s", out)
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
