package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newValidate() *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration before anything costs money",
		Long: `validate checks every field of the configuration (file, then LATENTWORKER_*
environment variables, then flags) and that the worker password can be read,
without prompting. Every error names the field and what is allowed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			verr := cfg.Validate()
			_, perr := cfg.Password(nil)
			if err := errors.Join(verr, perr); err != nil {
				return badInput{err}
			}
			fmt.Fprintln(os.Stderr, "latentworker: configuration is valid")
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	return cmd
}
