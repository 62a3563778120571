package scripts

import "embed"

// files holds the script templates and the Python helpers they embed.
//
//go:embed linux unix windows python
var files embed.FS
