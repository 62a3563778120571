package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/lab/labtest"
)

// TestBakeImagePendingThenResume: the image wait runs out while the lab
// still reports the image pending (image_pending 20s, --image-timeout 2s):
// bake keeps the image, removes everything else, exits 5 naming the image
// and the resume command; bake --resume RUN_ID then waits for it, verifies
// it by booting it (a launch of its own, not the first attempt's) and
// writes the manifest, leaving no temporary behind; the AMI works on a
// master. The same resume again (case 1 of issue 21: it deleted the AMI)
// changes nothing, says so and exits 0; a run with nothing to resume is
// bad input (exit 2).
func TestBakeImagePendingThenResume(t *testing.T) {
	e := newCLIEnvWith(t, "image_pending = \"20s\"\n", "")
	ctx := context.Background()
	cmd := e.command(ctx, "bake", "--json", "--terminate-builder", "--image-timeout", "2s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != exitImagePending {
		t.Fatalf("bake with a short image wait: exit %d; want %d\n%s\n%s", code, exitImagePending, out, stderr.String())
	}
	evs := events(t, out)
	last := evs[len(evs)-1]
	runID, _ := evs[0]["run_id"].(string)
	image, _ := last["image_id"].(string)
	if last["type"] != "error" || last["image_pending"] != true || image == "" || last["resume"] != "latentworker bake --resume "+runID {
		t.Fatalf("last event %v; want an error with the pending image and the resume command", last)
	}
	// Only the image (and its snapshot) remain of the run.
	so, se, code := e.sweep(ctx, "--max-age", "1s")
	if strings.Contains(so, "instance") || strings.Contains(so, "key-pair") || strings.Contains(so, "security-group") {
		t.Errorf("after the run, sweep found (exit %d):\n%s%s; want no instance, key pair or group", code, so, se)
	}

	cmd = e.command(ctx, "bake", "--json", "--resume", runID)
	stderr.Reset()
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bake --resume %s: %v\n%s\n%s", runID, err, out, stderr.String())
	}
	evs = events(t, out)
	last = evs[len(evs)-1]
	if last["type"] != "result" || last["image_id"] != image || last["run_id"] != runID {
		t.Fatalf("resume's last event %v; want the result for %s of run %s", last, image, runID)
	}
	manifest, _ := last["manifest"].(string)
	if b, err := os.ReadFile(manifest); err != nil || !bytes.Contains(b, []byte(`"verified": true`)) {
		t.Errorf("manifest %s: %v\n%s", filepath.Base(manifest), err, b)
	}
	e.noSecret(t, "resume's output", append(out, stderr.Bytes()...))
	onlyImage := func(when string) {
		t.Helper()
		left := labtest.RunResources(t, e.lab.EC2(""), runID)
		found := false
		for _, l := range left {
			found = found || l == "image "+image
			if !strings.HasPrefix(l, "image "+image) && !strings.HasPrefix(l, "snapshot ") {
				t.Errorf("%s, run %s has %s; want only its image and snapshot", when, runID, l)
			}
		}
		if !found {
			t.Errorf("%s, run %s has %v; want its image %s", when, runID, left, image)
		}
	}
	onlyImage("after the resume")
	e.launchWithAWSCLI(t, image)

	before, _ := os.ReadFile(manifest)
	for _, args := range [][]string{{"bake", "--resume", runID}, {"bake", "--json", "--resume", runID}} {
		cmd = e.command(ctx, args...)
		stderr.Reset()
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil || !strings.Contains(string(out), image) {
			t.Fatalf("%v of a finished run: %v; want exit 0 and its image %s\n%s\n%s", args, err, image, out, stderr.String())
		}
		if args[1] != "--json" && !strings.Contains(stderr.String(), "finished already") {
			t.Errorf("%v of a finished run does not say it finished already:\n%s", args, stderr.String())
		}
		if args[1] == "--json" {
			if evs := events(t, out); evs[len(evs)-1]["already_finished"] != true {
				t.Errorf("the result of %v: %v; want already_finished", args, evs[len(evs)-1])
			}
		}
	}
	onlyImage("after resuming the finished run")
	if after, _ := os.ReadFile(manifest); !bytes.Equal(before, after) {
		t.Errorf("resuming the finished run rewrote its manifest")
	}

	cmd = e.command(ctx, "bake", "--resume", "20200101T000000Z-abcdef")
	combined, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitBadInput || !strings.Contains(string(combined), "nothing to resume") {
		t.Errorf("bake --resume of a run that made nothing = exit %d; want %d saying nothing to resume\n%s", code, exitBadInput, combined)
	}
}
