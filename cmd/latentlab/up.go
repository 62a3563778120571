package main

import (
	"fmt"
	"os"

	"github.com/latentworker/latentworker/lab"
	"github.com/spf13/cobra"
)

func newUp(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Start the lab (moto, the EC2 endpoint, the buildbot master) in the background",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := lab.LoadConfig(o.ConfigPath); err != nil {
				return usageError{err}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			st, err := lab.Up(cmd.Context(), *o, self, os.Stderr)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "latentlab: point AWS clients at it with: eval \"$(latentlab env)\"\n")
			fmt.Print(lab.Env(st))
			return nil
		},
	}
}

func newDown(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab: every process, container, mount and temporary file it made (also after a crash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Down(*o, os.Stderr)
		},
	}
}

func newEnv(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print the shell exports that point the AWS CLI, boto3 and latentworker at the lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, ok := lab.Running(*o)
			if !ok {
				return lab.ErrNotUp
			}
			fmt.Print(lab.Env(st))
			return nil
		},
	}
}

func newStatus(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Say whether the lab is up and what it runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := lab.Status(*o)
			if err != nil {
				return err
			}
			fmt.Print(s)
			return nil
		},
	}
}

func newServe(o *lab.Options) *cobra.Command {
	return &cobra.Command{
		Use:    "serve",
		Short:  "Run the lab in the foreground (what 'up' starts in the background)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := lab.RequireRoot(); err != nil {
				return err
			}
			return lab.Serve(cmd.Context(), *o, os.Stderr)
		},
	}
}
