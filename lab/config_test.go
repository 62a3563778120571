package lab

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func loadLabFile(t *testing.T, content string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lab.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(p)
}

// TestConfigImages: the releases `up` builds first default to debian-12;
// an empty list builds none; an unknown one is refused by name.
func TestConfigImages(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil || !reflect.DeepEqual(c.Images, []string{"debian-12"}) {
		t.Errorf("defaults: images %v, %v; want [debian-12]", c.Images, err)
	}
	c, err = loadLabFile(t, "images = []\n")
	if err != nil || len(c.Images) != 0 {
		t.Errorf("images = []: %v, %v; want none", c.Images, err)
	}
	c, err = loadLabFile(t, `images = ["debian-12", "ubuntu-24.04"]`+"\n")
	if err != nil || !reflect.DeepEqual(c.Images, []string{"debian-12", "ubuntu-24.04"}) {
		t.Errorf("two images: %v, %v", c.Images, err)
	}
	_, err = loadLabFile(t, `images = ["debian-12", "nosuch"]`+"\n")
	if err == nil || !strings.Contains(err.Error(), "images[1]") || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), "ubuntu-24.04") {
		t.Errorf("unknown image: %v; want an error naming images[1], nosuch and the known releases", err)
	}
}

// TestCatalogue: every release's AMIs are registered with its owner and
// default user; only x86_64 ones are bootable.
func TestCatalogue(t *testing.T) {
	byID := map[string]CatalogueImage{}
	for _, ci := range Catalogue() {
		byID[ci.ID] = ci
		if ci.Bootable != (ci.Arch == "x86_64") {
			t.Errorf("%s (%s): bootable %v", ci.ID, ci.Arch, ci.Bootable)
		}
	}
	for id, want := range map[string]CatalogueImage{
		"ami-0c9e2f4d1a6b73852": {Name: "debian-12-amd64-20261101-1234", Owner: DebianOwner, Release: "debian-12", User: "admin"},
		"ami-0d4f6b8a2c1e90573": {Name: "debian-12-arm64-20261101-1234", Owner: DebianOwner, Release: "debian-12", User: "admin"},
		"ami-08d4a0b2c6e37f915": {Name: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20261113", Owner: CanonicalOwner, Release: "ubuntu-24.04", User: "ubuntu"},
	} {
		got := byID[id]
		if got.Name != want.Name || got.Owner != want.Owner || got.Release != want.Release || got.User != want.User {
			t.Errorf("catalogue %s = %+v; want %+v", id, got, want)
		}
	}
}

func TestLoadConfigMasterBuildbot(t *testing.T) {
	for _, c := range []struct {
		value, wantErr string
	}{
		{"", ""},
		{"debian", ""},
		{"4.3.0", ""},
		{"4.3", "master.buildbot"},
		{"latest", "master.buildbot"},
		{"4.3.0; rm -rf /", "master.buildbot"},
	} {
		path := filepath.Join(t.TempDir(), "lab.toml")
		if err := os.WriteFile(path, []byte("[master]\nbuildbot = \""+strings.ReplaceAll(c.value, `"`, `\"`)+"\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("LoadConfig(buildbot = %q) = %v; want nil", c.value, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("LoadConfig(buildbot = %q) = %v; want an error naming %s", c.value, err, c.wantErr)
		case err == nil && cfg.Master.Buildbot != c.value:
			t.Errorf("LoadConfig(buildbot = %q).Master.Buildbot = %q", c.value, cfg.Master.Buildbot)
		}
	}
}
