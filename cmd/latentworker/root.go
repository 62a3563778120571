package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/config"
)

// Exit codes, one table for every command (sweep adds its own, see its help).
const (
	exitOK       = 0
	exitFailure  = 1
	exitBadInput = 2
	// bake: the image is baked, available and verified (the result is
	// printed), but cleanup left resources behind (printed, with the
	// commands that remove them).
	exitBakedWithLeftovers = 4
	// bake: the run failed but kept its image (still pending when the wait
	// ran out, or verified before a later step failed); everything else
	// is removed; bake --resume RUN_ID finishes the run.
	exitImagePending = 5
	exitInterrupted  = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failure (what was left behind, if anything, is printed with the command that removes it)
  2    bad input: a flag, the config file, or a value in it (the message names the field)
  4    bake: the image is baked and verified (result printed) but cleanup left resources (printed with the commands that remove them) or a copy to another region failed (named; the image and the other copies are kept)
  5    bake: the run failed but kept its image (still pending when the wait ran out, or verified
       before a later step failed) for bake --resume RUN_ID; the rest removed
  130  interrupted (Ctrl-C or SIGTERM), after cleaning up`

// errBadInput marks errors the user fixes by changing input.
var errBadInput = errors.New("bad input")

type badInput struct{ err error }

func (e badInput) Error() string   { return e.err.Error() }
func (e badInput) Unwrap() []error { return []error{e.err, errBadInput} }

// noArgs refuses positional arguments as bad input (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return badInput{fmt.Errorf("%w (latentworker %s takes flags only)", err, cmd.Name())}
	}
	return nil
}

// report prints err for a human and returns the exit code.
func report(w io.Writer, err error) int {
	var ec exitCode
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		if ec.err != nil {
			if errors.Is(ec.err, context.Canceled) {
				fmt.Fprintln(w, "latentworker: interrupted")
				return exitInterrupted
			}
			fmt.Fprintln(w, "latentworker:", ec.err)
		}
		return ec.code
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(w, "latentworker: interrupted")
		return exitInterrupted
	case errors.Is(err, errBadInput):
		fmt.Fprintln(w, "latentworker:", err)
		return exitBadInput
	default:
		fmt.Fprintln(w, "latentworker:", err)
		if h := awserr.Hint(err); h != "" {
			fmt.Fprintln(w, "latentworker:", h)
		}
		return exitFailure
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "latentworker",
		Short: "Bake buildbot latent-worker AMIs, hand them off, sweep zombies",
		Long: `latentworker turns a base EC2 AMI into a ready buildbot latent-worker image,
hands the buildmaster admins what they need to launch it, and sweeps up
instances a master failed to shut down.

It talks to AWS through the SDK's default chain (profiles, SSO, environment,
AWS_ENDPOINT_URL). Start with 'latentworker init'.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return badInput{err} })
	root.Version = versionString()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newInit(), newValidate(), newBake(), newHandoff(), newSweep(), newPlatforms(), newStatus(), newProvision(), newVersion())
	return root
}

// configFlags binds the config file flag and one flag per config key (from
// config.Keys, the table the file and the environment use too).
type configFlags struct {
	path  string
	flags *pflag.FlagSet
}

func addConfigFlags(cmd *cobra.Command) *configFlags {
	cf := &configFlags{flags: cmd.Flags()}
	cmd.Flags().StringVarP(&cf.path, "config", "c", config.DefaultFile, "config file (TOML)")
	for _, k := range config.Keys() {
		if k.Flag == "" {
			continue
		}
		help := k.Help + " (" + k.Name
		if k.Env != "" {
			help += ", $" + k.Env
		}
		help += ")"
		switch k.Kind {
		case config.KindList, config.KindTable:
			cmd.Flags().StringArray(k.Flag, nil, help)
		default:
			cmd.Flags().String(k.Flag, "", help)
		}
	}
	return cf
}

// load reads the file, then the environment, then the flags that were set.
func (cf *configFlags) load() (*config.Config, error) {
	var cfg *config.Config
	if _, err := os.Stat(cf.path); err == nil {
		if cfg, err = config.Load(cf.path); err != nil {
			return nil, badInput{err}
		}
	} else if cf.flags.Changed("config") {
		return nil, badInput{fmt.Errorf("config file %s: %w (write a starter with 'latentworker init')", cf.path, err)}
	} else {
		cfg = config.Default()
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return nil, badInput{err}
	}
	for _, k := range config.Keys() {
		if k.Flag == "" || !cf.flags.Changed(k.Flag) {
			continue
		}
		var values []string
		switch k.Kind {
		case config.KindList, config.KindTable:
			values, _ = cf.flags.GetStringArray(k.Flag)
		default:
			v, _ := cf.flags.GetString(k.Flag)
			values = []string{v}
		}
		for _, v := range values {
			if err := cfg.Set(k.Name, v); err != nil {
				return nil, badInput{fmt.Errorf("--%s: %w", k.Flag, err)}
			}
		}
	}
	return cfg, nil
}
