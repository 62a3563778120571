package lab_test

import (
	"testing"

	"github.com/latentworker/latentworker/lab/labtest"
)

// TestMain removes the lab binary the tests built.
func TestMain(m *testing.M) {
	m.Run()
	labtest.RemoveBinaries()
}
