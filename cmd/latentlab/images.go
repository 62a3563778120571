package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/latentworker/latentworker/lab"
	"github.com/latentworker/latentworker/lab/image"
	"github.com/spf13/cobra"
)

func newImages(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "images",
		Short: "List the releases the lab can boot, their AMIs' owner and name pattern, and whether their base image is built",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "RELEASE\tSUITE\tUSER\tBASE\tOWNER\tNAME PATTERN")
			for _, r := range image.Recipes() {
				base := "not built (built on first launch, or: latentlab build-image " + r.Name + ")"
				if dir, ok := image.Built(o.CacheDir, r.Name); ok {
					base = dir
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Suite, r.User, base, r.Owner, r.NamePattern)
			}
			return w.Flush()
		},
	}
}

func newBuildImage(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "build-image RELEASE...",
		Short: "Build and cache the base images of releases now (as `up` does for the lab file's images)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if _, err := image.Lookup(name); err != nil {
					return usageError{err}
				}
			}
			if err := lab.RequireRoot(); err != nil {
				return err
			}
			for _, name := range args {
				start := time.Now()
				dir, err := image.EnsureBase(cmd.Context(), o.CacheDir, name, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Printf("%s\t%s\t%.0fs\n", name, dir, time.Since(start).Seconds())
			}
			return nil
		},
	}
}

// usageError is bad input: exit status 2.
type usageError struct{ error }
