package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/latentworker/latentworker/lab/labtest"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	m.Run()
	labtest.RemoveBinaries()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}
