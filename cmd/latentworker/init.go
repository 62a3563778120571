package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/latentworker/latentworker/config"
)

type initOptions struct {
	path  string
	force bool
}

func newInit() *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented starter config file",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(o)
		},
	}
	cmd.Flags().StringVarP(&o.path, "config", "c", config.DefaultFile, "where to write it")
	cmd.Flags().BoolVar(&o.force, "force", false, "overwrite an existing file")
	return cmd
}

func runInit(o *initOptions) error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_EXCL
	if o.force {
		flags = os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	}
	f, err := os.OpenFile(o.path, flags, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return badInput{fmt.Errorf("%s exists; use --force to overwrite it", o.path)}
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(config.Starter()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "latentworker: wrote %s; fill in the worker section, then run 'latentworker validate'\n", o.path)
	return nil
}
