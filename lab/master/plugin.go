package master

import (
	"fmt"
	"os"
	"path/filepath"
)

// pluginModule is the Python package of the stub www plugin.
const pluginModule = "latentlab_www_base"

// pylibDir is the directory under Dir that goes on the master's PYTHONPATH.
const pylibDir = "pylib"

// pluginFiles are the files of the stub "base" www plugin, relative to
// Dir/pylib.
//
// Buildbot 3.7's WWWService loads the plugins of entry point group
// "buildbot.www" through pkg_resources (buildbot.plugins.db.get_plugins) and
// refuses to serve anything without one named "base", which Debian does not
// ship (it is the web UI). buildbot.www.plugin.Application reads the
// package's VERSION file and serves its static/ directory, and the index
// page renders static/index.html with Jinja. Everything else, including
// /api/v2, is buildbot's own, so this stub gives the full REST API without a
// UI. pkg_resources finds the entry point through the *.dist-info directory
// on sys.path.
var pluginFiles = []struct {
	path    string
	content string
}{
	{pluginModule + "/__init__.py", `"""Stub buildbot www 'base' plugin for the latentworker lab: REST API, no UI."""
from buildbot.www.plugin import Application

ep = Application(__name__, "latentworker lab stub (REST API only, no web UI)", ui=True)
`},
	{pluginModule + "/VERSION", "0.0.0\n"},
	{pluginModule + "/static/index.html", `<!DOCTYPE html>
<html><head><title>latentworker lab</title></head>
<body><p>latentworker lab buildbot master: no web UI, see <a href="api/v2">api/v2</a>.</p></body></html>
`},
	{pluginModule + "-0.0.0.dist-info/METADATA", `Metadata-Version: 2.1
Name: latentlab-www-base
Version: 0.0.0
Summary: Stub buildbot www base plugin for the latentworker lab
`},
	{pluginModule + "-0.0.0.dist-info/entry_points.txt", `[buildbot.www]
base = ` + pluginModule + `:ep
`},
}

// writePlugin writes the stub www plugin under dir/pylib and returns that
// directory, to be put on PYTHONPATH.
func writePlugin(dir string) (string, error) {
	root := filepath.Join(dir, pylibDir)
	for _, f := range pluginFiles {
		p := filepath.Join(root, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("write www plugin: %w", err)
		}
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			return "", fmt.Errorf("write www plugin: %w", err)
		}
	}
	return root, nil
}
