package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// versionString is the module version and the commit the binary was built
// from, as the Go toolchain recorded them (go build in a git checkout).
func versionString() string {
	version, commit, dirty, when := "(unknown)", "", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			case "vcs.time":
				when = s.Value
			}
		}
	}
	s := "latentworker " + version
	if commit != "" {
		s += " commit " + commit
		if dirty {
			s += " (modified)"
		}
		if when != "" {
			s += " " + when
		}
	}
	return s + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func newVersion() *cobra.Command {
	var stdout io.Writer = os.Stdout
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit latentworker was built from",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(stdout, versionString())
			return err
		},
	}
}
