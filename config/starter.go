package config

import (
	"bytes"
	_ "embed"
)

//go:embed starter.toml
var starter []byte

// Starter returns the commented configuration file that "latentworker init"
// writes. It loads, and it validates once worker.name, worker.admin_name and
// worker.admin_email, left empty and marked REQUIRED, are filled in.
func Starter() []byte {
	return bytes.Clone(starter)
}
