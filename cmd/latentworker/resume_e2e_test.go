package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBakeImagePendingThenResume: the image wait runs out while the lab
// still reports the image pending (image_pending 20s, --image-timeout 2s):
// bake keeps the image, removes everything else, exits 5 naming the image
// and the resume command; bake --resume RUN_ID then waits for it, verifies
// it by booting it and writes the manifest; the AMI works on a master.
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
	e.launchWithAWSCLI(t, image)
}
