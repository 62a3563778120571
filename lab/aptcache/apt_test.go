package aptcache

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// aptHelper is apt's own downloader: the same http method apt-get uses.
const aptHelper = "/usr/lib/apt/apt-helper"

// TestRealApt fetches a package twice through the proxy with apt's http
// method, from the fake mirror on loopback.
func TestRealApt(t *testing.T) {
	if _, err := os.Stat(aptHelper); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: %v", aptHelper, err)
		}
		t.Skipf("%s not installed: %v", aptHelper, err)
	}
	u := newUpstream(t)
	deb := bytes.Repeat([]byte("a real apt download "), 50<<10)
	u.put(debPath, deb)
	c, cl, _ := setup(t, u)
	proxyURL := "http://" + proxyAddr(t, cl) + "/"

	dir := t.TempDir()
	for i, name := range []string{"first.deb", "second.deb"} {
		dest := filepath.Join(dir, name)
		cmd := exec.CommandContext(t.Context(), aptHelper,
			"-o", "Acquire::http::Proxy="+proxyURL,
			"-o", "Debug::Acquire::http=false",
			"download-file", "http://"+u.host()+debPath, dest)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("apt-helper download %d: %v\n%s", i, err, out)
		}
		got, err := os.ReadFile(dest)
		if err != nil || !bytes.Equal(got, deb) {
			t.Fatalf("download %d: %d bytes, %v; want %d identical bytes", i, len(got), err, len(deb))
		}
	}
	if got := u.requests(); len(got) != 1 {
		t.Errorf("upstream requests = %q; want 1 (second download from cache)", got)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Errorf("Stats() = %+v; want 1 hit, 1 miss", s)
	}
}

// TestAptConf checks the snippet is what apt parses: apt-config dumps it back.
func TestAptConf(t *testing.T) {
	const aptConfig = "/usr/bin/apt-config"
	if _, err := os.Stat(aptConfig); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: %v", aptConfig, err)
		}
		t.Skipf("%s not installed: %v", aptConfig, err)
	}
	conf := filepath.Join(t.TempDir(), "proxy.conf")
	if err := os.WriteFile(conf, []byte(AptConf("127.0.0.1:4571")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), aptConfig, "dump", "Acquire")
	cmd.Env = append(os.Environ(), "APT_CONFIG="+conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-config dump: %v\n%s", err, out)
	}
	for _, want := range []string{`Acquire::http::Proxy "http://127.0.0.1:4571/";`, `Acquire::https::Proxy "DIRECT";`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("apt-config dump lacks %q:\n%s", want, out)
		}
	}
}
