package scripts

import "embed"

// files holds the script templates and the Python helpers they embed.
//
//go:embed linux python
var files embed.FS
