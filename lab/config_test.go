package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
