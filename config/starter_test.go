package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestStarter(t *testing.T) {
	golden(t, "starter.toml.golden", Starter())

	dir := t.TempDir()
	path := filepath.Join(dir, DefaultFile)
	if err := os.WriteFile(path, Starter(), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(starter) = %v; want nil", err)
	}
	keys, other := fieldKeys(c.Validate())
	if want := []string{"worker.name", "worker.admin_name", "worker.admin_email"}; !slices.Equal(keys, want) || other != nil {
		t.Errorf("starter Validate() names %q and %v; want only the required %q", keys, other, want)
	}

	// Filling in the placeholders makes it valid, and it is then the
	// defaults: the starter documents them truthfully.
	s := string(Starter())
	s = strings.Replace(s, "\nname = \"\"", "\nname = \"aws-debian-x86\"", 1)
	s = strings.Replace(s, "admin_name = \"\"", "admin_name = \"Jane Doe\"", 1)
	s = strings.Replace(s, "admin_email = \"\"", "admin_email = \"jane@example.org\"", 1)
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Load(path)
	if err != nil {
		t.Fatalf("Load(filled starter) = %v; want nil", err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("filled starter Validate() = %v; want nil", err)
	}
	want := valid()
	if !reflect.DeepEqual(c.Worker, want.Worker) || !reflect.DeepEqual(c.AWS, want.AWS) || !reflect.DeepEqual(c.Image, want.Image) {
		t.Errorf("filled starter = %+v\nwant the defaults %+v", c, want)
	}

	// Every key is in the starter, set or commented out, under its section.
	section := ""
	present := map[string]bool{}
	header := regexp.MustCompile(`^\[(\w+)\]$`)
	assign := regexp.MustCompile(`^(?:# )?(\w+) = `)
	for _, line := range strings.Split(s, "\n") {
		if m := header.FindStringSubmatch(line); m != nil {
			section = m[1]
		} else if m := assign.FindStringSubmatch(line); m != nil && section != "" {
			present[section+"."+m[1]] = true
		}
	}
	for _, k := range Keys() {
		if !present[k.Name] {
			t.Errorf("key %s is not in the starter", k.Name)
		}
	}
	if !strings.Contains(s, "REQUIRED") || !strings.Contains(s, "NOT kept in this file") {
		t.Errorf("starter does not mark the required keys or explain the password")
	}
}
