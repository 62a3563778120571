package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type mapEnv map[string]string

func (m mapEnv) get(k string) string { return m[k] }

func TestKeysTable(t *testing.T) {
	golden(t, "keys.md.golden", []byte(KeysMarkdown()))

	// Every toml field of Config has exactly one key, and the other way round.
	var fields []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sec := ct.Field(i)
		if !sec.IsExported() {
			continue
		}
		for j := range sec.Type.NumField() {
			fields = append(fields, sec.Tag.Get("toml")+"."+sec.Type.Field(j).Tag.Get("toml"))
		}
	}
	if names := keyNames(); !slices.Equal(names, fields) {
		t.Errorf("key table = %q\nConfig fields = %q", names, fields)
	}

	seen := map[string]bool{}
	d := Default()
	for _, k := range keyTable {
		for _, s := range []string{k.Name, k.Env, "--" + k.Flag} {
			if s != "" && s != "--" && seen[s] {
				t.Errorf("%q used twice in the key table", s)
			}
			seen[s] = true
		}
		if k.Env != "" && !strings.HasPrefix(k.Env, "LATENTWORKER_") {
			t.Errorf("key %s: env %q; want a LATENTWORKER_ prefix", k.Name, k.Env)
		}
		if k.Flag == "" || k.Help == "" {
			t.Errorf("key %s has no flag or no help", k.Name)
		}
		var got string
		var kind Kind
		switch p := k.field(d).(type) {
		case *string:
			got, kind = *p, KindString
		case *int:
			got, kind = strconv.Itoa(*p), KindInt
		case *bool:
			got, kind = strconv.FormatBool(*p), KindBool
		case *[]string:
			got, kind = strings.Join(*p, ","), KindList
		case *map[string]string:
			kind = KindTable
		}
		if kind != k.Kind {
			t.Errorf("key %s: Kind %q; its field is a %s", k.Name, k.Kind, kind)
		}
		if k.Default != "per platform" && got != k.Default {
			t.Errorf("key %s: documented default %q; Default() has %q", k.Name, k.Default, got)
		}
		if k.Required && k.Default != "" {
			t.Errorf("key %s is required and has a default", k.Name)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	env := mapEnv{}
	for _, k := range Keys() {
		if k.Env == "" {
			continue
		}
		switch k.Kind {
		case KindString:
			env[k.Env] = "v-" + k.Name
		case KindInt:
			env[k.Env] = "77"
		case KindBool:
			env[k.Env] = "true"
		case KindTable:
			env[k.Env] = "a=1, b = 2,c="
		}
	}
	env["LATENTWORKER_BASE_AMI"] = ""  // empty is unset: no conflict with the filter
	env["LATENTWORKER_PASSWORD"] = "x" // not a config key: ignored
	c := Default()
	c.AWS.Tags["keep"] = "me"
	if err := c.ApplyEnv(env.get); err != nil {
		t.Fatalf("ApplyEnv(all) = %v", err)
	}
	cwd, _ := os.Getwd()
	for _, tc := range []struct{ got, want any }{
		{c.Worker.Name, "v-worker.name"},
		{c.Worker.PasswordEnv, "v-worker.password_env"},
		{c.Worker.PasswordFile, filepath.Join(cwd, "v-worker.password_file")},
		{c.AWS.Region, "v-aws.region"},
		{c.AWS.InstanceType, "v-aws.instance_type"},
		{c.AWS.Tags, map[string]string{"keep": "me", "a": "1", "b": "2", "c": ""}},
		{c.Image.BaseAMI, ""},
		{c.Image.BaseName, "v-image.base_name"},
		{c.Image.RootVolumeGiB, 77},
		{c.Image.CPythonBuildDeps, true},
		{c.Image.NamePrefix, "v-image.name_prefix"},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("after ApplyEnv: %v; want %v", tc.got, tc.want)
		}
	}

	c = Default()
	err := c.ApplyEnv(mapEnv{
		"LATENTWORKER_ROOT_VOLUME_GIB":    "lots",
		"LATENTWORKER_CPYTHON_BUILD_DEPS": "yes please",
		"LATENTWORKER_TAGS":               "novalue",
		"LATENTWORKER_REGION":             "eu-west-1",
	}.get)
	for _, want := range []string{
		`$LATENTWORKER_ROOT_VOLUME_GIB: image.root_volume_gib = "lots": must be a whole number`,
		`$LATENTWORKER_CPYTHON_BUILD_DEPS: image.cpython_build_deps = "yes please": must be true or false`,
		`$LATENTWORKER_TAGS: aws.tags = "novalue": want key=value pairs`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ApplyEnv(bad) = %v; want it to contain %q", err, want)
		}
	}
	if c.AWS.Region != "eu-west-1" {
		t.Errorf("ApplyEnv(bad) did not apply the good variables: region %q", c.AWS.Region)
	}
}

func TestSet(t *testing.T) {
	cwd, _ := os.Getwd()
	for _, tc := range []struct {
		desc  string
		sets  [][2]string
		check func(*Config) bool
		err   string
	}{
		{"string", [][2]string{{"worker.name", "w"}}, func(c *Config) bool { return c.Worker.Name == "w" }, ""},
		{"clear", [][2]string{{"worker.master", ""}}, func(c *Config) bool { return c.Worker.Master == "" }, ""},
		{"int", [][2]string{{"image.root_volume_gib", " 40"}}, func(c *Config) bool { return c.Image.RootVolumeGiB == 40 }, ""},
		{"bool", [][2]string{{"image.cpython_build_deps", "1"}}, func(c *Config) bool { return c.Image.CPythonBuildDeps }, ""},
		{"list appends", [][2]string{{"image.extra_scripts", "a.sh"}, {"image.extra_scripts", "/b.sh"}},
			func(c *Config) bool {
				return slices.Equal(c.Image.ExtraScripts, []string{filepath.Join(cwd, "a.sh"), "/b.sh"})
			}, ""},
		{"tags merge", [][2]string{{"aws.tags", "a=1"}, {"aws.tags", "a=2,b=3"}},
			func(c *Config) bool { return reflect.DeepEqual(c.AWS.Tags, map[string]string{"a": "2", "b": "3"}) }, ""},
		{"ami drops file filter", [][2]string{{"image.base_ami", "ami-12345678"}},
			func(c *Config) bool { return c.Image.BaseName == "" && c.Image.BaseOwner == "" }, ""},
		{"filter drops file ami", [][2]string{{"image.base_name", "x-*"}},
			func(c *Config) bool { return c.Image.BaseAMI == "" && c.Image.BaseName == "x-*" }, ""},
		{"same layer keeps both", [][2]string{{"image.base_owner", "self"}, {"image.base_ami", "ami-12345678"}},
			func(c *Config) bool {
				return c.Image.BaseAMI == "ami-12345678" && c.Image.BaseOwner == "self" && c.Image.BaseName == ""
			}, ""},
		{"unknown", [][2]string{{"aws.regin", "x"}}, nil, `unknown key "aws.regin" (did you mean "aws.region"?)`},
		{"password", [][2]string{{"worker.password", "hunter2"}}, nil, "worker.password: the worker password is never kept in the config file or given as a flag value"},
		{"bad int", [][2]string{{"image.root_volume_gib", "3O"}}, nil, `image.root_volume_gib = "3O": must be a whole number`},
		{"bad tags", [][2]string{{"aws.tags", "=x"}}, nil, "want key=value pairs"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := Default()
			c.Image.BaseAMI = "ami-87654321"
			c.Image.BaseName = "file-*"
			c.Image.BaseOwner = "self"
			for _, k := range []string{"image.base_ami", "image.base_name", "image.base_owner"} {
				c.origins[k] = origin{layer: layerFile}
			}
			var err error
			for _, kv := range tc.sets {
				if err = c.Set(kv[0], kv[1]); err != nil {
					break
				}
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("Set(%q) = %v; want an error containing %q", tc.sets, err, tc.err)
				}
				if strings.Contains(tc.desc, "password") && strings.Contains(err.Error(), "hunter2") {
					t.Errorf("Set(password) = %v; must not contain the value", err)
				}
				if strings.Contains(tc.desc, "unknown") && !errors.Is(err, ErrUnknownKey) {
					t.Errorf("Set(unknown) = %v; want ErrUnknownKey", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Set(%q) = %v; want nil", tc.sets, err)
			}
			if !tc.check(c) {
				t.Errorf("after Set(%q): %+v", tc.sets, c)
			}
		})
	}
}

func TestLayers(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "lw.toml", "[image]\nbase_name = \"file-*\"\n[aws]\nregion = \"us-east-1\"\n", 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyEnv(mapEnv{"LATENTWORKER_BASE_AMI": "ami-12345678", "LATENTWORKER_REGION": "eu-west-1"}.get); err != nil {
		t.Fatal(err)
	}
	if c.Image.BaseAMI != "ami-12345678" || c.Image.BaseName != "" || c.AWS.Region != "eu-west-1" {
		t.Errorf("env over file: %+v", c.Image)
	}
	if err := c.Set("image.base_name", "flag-*"); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("aws.region", "eu-west-2"); err != nil {
		t.Fatal(err)
	}
	if c.Image.BaseAMI != "" || c.Image.BaseName != "flag-*" || c.AWS.Region != "eu-west-2" {
		t.Errorf("flag over env: %+v", c.Image)
	}
}
