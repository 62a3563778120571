// Command latentlab runs the local EC2 lab that latentworker is proved in:
// moto for the API, instances that are real Debian systems booted with
// systemd-nspawn, and a real buildbot master. See `latentlab --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/latentworker/latentworker/lab"
	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "latentlab:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	o := lab.DefaultOptions()
	root := &cobra.Command{
		Use:   "latentlab",
		Short: "A local EC2 whose instances are real Debian and Ubuntu systems, plus a real buildbot master",
		Long: `latentlab runs a local EC2 for latentworker and any AWS client:

  moto answers the EC2, IAM and STS APIs; a front endpoint on loopback gives
  instances a body: RunInstances boots a Debian or Ubuntu system with
  systemd-nspawn on overlayfs, reachable over SSH at its own 127.x address,
  RebootInstances reboots it, CreateImage captures its filesystem as a new
  AMI. A buildbot master runs beside it on loopback: Debian's 3.7, or a
  version from PyPI on Python 3.13 with [master] buildbot = "4.3.0".

Its catalogue has AMIs of every release 'latentlab images' lists, named and
owned as on AWS. It needs root. Each release's base image is built
with debootstrap once (1.5 to 4 minutes) and cached: 'up' builds the lab
file's images (default debian-12) before it starts, the others are built when
one of their AMIs is first launched (the instance stays pending meanwhile) or
by 'latentlab build-image'.

Exit codes: 0 success, 1 failure, 2 bad input.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.StateDir, "state-dir", o.StateDir, "runtime state: lab.json, logs, layers, instances (env LATENTLAB_STATE)")
	pf.StringVar(&o.CacheDir, "cache-dir", o.CacheDir, "where the base image is cached (env LATENTLAB_CACHE)")
	pf.StringVar(&o.ConfigPath, "config", o.ConfigPath, "lab file (TOML; env LATENTLAB_CONFIG); defaults without one")
	root.AddCommand(newUp(&o), newDown(&o), newEnv(&o), newStatus(&o), newServe(&o), newImages(&o), newBuildImage(&o), newBuild(&o))
	return root
}
