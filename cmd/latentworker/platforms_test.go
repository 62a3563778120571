package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/latentworker/latentworker/platform"
)

func TestPlatformsJSON(t *testing.T) {
	var out bytes.Buffer
	if err := runPlatforms(&platformsOptions{json: true, stdout: &out}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != len(platform.All()) {
		t.Fatalf("%d lines; want one per platform (%d)", len(got), len(platform.All()))
	}
	for _, m := range got {
		for _, k := range []string{"name", "family", "base_owner", "base_name", "ssh_user", "install", "service", "proved_by", "proof"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%v: no %q", m["name"], k)
			}
		}
	}
	want := map[string][4]string{
		"debian-12":    {"136693071363", "debian-12-amd64-*", "admin", "lab"},
		"debian-13":    {"136693071363", "debian-13-amd64-*", "admin", "lab"},
		"ubuntu-24.04": {"099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", "ubuntu", "lab"},
		"windows-2022": {"amazon", "Windows_Server-2022-English-Full-Base-*", "Administrator", "static"},
		"windows-2025": {"amazon", "Windows_Server-2025-English-Full-Base-*", "Administrator", "static"},
		"freebsd-14":   {"782442783595", "FreeBSD 14.*-RELEASE-amd64* base UFS", "ec2-user", "static"},
		"openbsd":      {"", "", "", "static"},
		"macos":        {"amazon", "amzn-ec2-macos-*", "ec2-user", "static"},
	}
	for _, m := range got {
		w, ok := want[m["name"].(string)]
		if !ok {
			continue
		}
		if m["base_owner"] != w[0] || m["base_name"] != w[1] || m["ssh_user"] != w[2] || m["proved_by"] != w[3] {
			t.Errorf("%v = %v; want owner, pattern, user, proved by %v", m["name"], m, w)
		}
		if w[3] == "static" && !strings.Contains(m["proof"].(string), "a first bake on AWS must confirm") {
			t.Errorf("%v: proof %q does not say what AWS must confirm", m["name"], m["proof"])
		}
		delete(want, m["name"].(string))
	}
	if len(want) > 0 {
		t.Errorf("missing platforms %v", want)
	}
}

func TestPlatformsTable(t *testing.T) {
	var out bytes.Buffer
	if err := runPlatforms(&platformsOptions{stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "NAME ") || !strings.Contains(out.String(), "debian-12 (debian)") {
		t.Errorf("table = %q", out.String())
	}
}

func TestUnknownPlatformIsBadInput(t *testing.T) {
	cfg := t.TempDir() + "/lw.toml"
	if err := run(t, nil, "init", "-c", cfg); err != nil {
		t.Fatal(err)
	}
	err := run(t, map[string]string{"LATENTWORKER_PASSWORD": "pw"}, "validate", "--offline", "-c", cfg, "--worker-name", "w1", "--admin-name", "A", "--admin-email", "a@example.org", "--platform", "nosuch")
	if err == nil || report(&bytes.Buffer{}, err) != exitBadInput || !strings.Contains(err.Error(), "image.platform") || !strings.Contains(err.Error(), "debian-13") {
		t.Errorf("validate --platform nosuch = %v; want bad input naming image.platform and the known platforms", err)
	}
}

// TestBakeJSONBadInput: with --json, bad input still ends the stream with
// an error event, and exits 2.
func TestBakeJSONBadInput(t *testing.T) {
	cfg := t.TempDir() + "/lw.toml"
	if err := run(t, nil, "init", "-c", cfg); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LATENTWORKER_PASSWORD", "pw")
	for _, args := range [][]string{
		{"--platform", "nosuch"},
		{"--image-timeout", "-5m"},
		{"--resume", "not-a-run"},
		{"--copy-to-region", "us-wset-2"},
		{"--region", "us-east-1", "--copy-to-region", "us-west-2", "--copy-to-region", "us-east-1"},
		{"--kms-key-id", "my key"},
	} {
		var out bytes.Buffer
		cmd := newBakeTo(&out, &bytes.Buffer{})
		cmd.SetArgs(append([]string{"--json", "-c", cfg, "--worker-name", "w1", "--admin-name", "A", "--admin-email", "a@example.org"}, args...))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.ExecuteContext(t.Context())
		if code := report(&bytes.Buffer{}, err); code != exitBadInput {
			t.Errorf("bake %v: exit %d (%v); want %d", args, code, err, exitBadInput)
		}
		if f := strings.TrimPrefix(args[len(args)-2], "--"); strings.Contains(f, "-to-region") || f == "kms-key-id" {
			if want := map[bool]string{true: "aws.copy_to_regions", false: "image.kms_key_id"}[f != "kms-key-id"]; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("bake %v: %v; want it to name %s", args, err, want)
			}
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var last map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last["type"] != "error" || last["exit_code"] != float64(exitBadInput) {
			t.Errorf("bake --json %v: last line %q; want an error event with exit_code 2", args, lines[len(lines)-1])
		}
	}
}
