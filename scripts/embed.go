package scripts

import "embed"

// files holds the script templates and the Python helpers they embed.
//
//go:embed linux/*.sh.tmpl linux/*.py
var files embed.FS
