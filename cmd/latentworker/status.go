package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/spf13/cobra"

	"github.com/latentworker/latentworker/cleanup"
	"github.com/latentworker/latentworker/scripts"
	"github.com/latentworker/latentworker/status"
)

// Exit codes of status, for cron and monitoring; with several problems the
// first of zombies, offline, old AMI wins.
const (
	exitStatusOffline = 3
	exitStatusOldAMI  = 4
	exitStatusZombies = 5
)

type statusOptions struct {
	cf           *configFlags
	masterURL    string
	offlineAfter time.Duration
	maxAMIAge    time.Duration
	maxAge       time.Duration
	stateFile    string
	noAWS        bool
	json         bool
	stdout       io.Writer
}

func newStatus() *cobra.Command {
	o := &statusOptions{stdout: os.Stdout}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "The configured worker as its master and AWS see it: connected, last build, AMI age, instances, zombies",
		Long: `status answers the guide's "periodically check the status of your worker"
(the fleet's offline notification does not work). From the master's REST API
(--master-url, default the CPython master): whether the worker is connected
and since when this command first saw it so (kept in --state-file), its last
build and its result, its builds in the last day. From AWS (the configured
region): the worker's newest AMI and its age, its running instances and
their age, its zombies (as sweep judges them). It changes nothing.

Exit codes, for cron and monitoring:
  0    fine
  1    the master or AWS could not be asked
  2    bad input
  3    offline: not connected for longer than --offline-after (or unknown to the master)
  4    the newest AMI is older than --max-ami-age (refresh: bake --from-previous)
  5    zombies: instances of the worker up longer than --max-age
With several problems the first of 5, 3, 4 is the exit code; --json lists all.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), o)
		},
	}
	o.cf = addConfigFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.masterURL, "master-url", status.DefaultMasterURL, "the buildmaster's web URL (its REST API is under api/v2)")
	f.DurationVar(&o.offlineAfter, "offline-after", 24*time.Hour, "not connected for longer than this is a problem (a latent worker is connected only while it builds)")
	f.DurationVar(&o.maxAMIAge, "max-ami-age", 60*24*time.Hour, "a newest AMI older than this is a problem; 0: never")
	f.DurationVar(&o.maxAge, "max-age", cleanup.DefaultMaxAge, "an instance of the worker up longer than this is a zombie")
	f.StringVar(&o.stateFile, "state-file", defaultStateFile(), "where status remembers when the worker was first seen connected or disconnected")
	f.BoolVar(&o.noAWS, "no-aws", false, "ask only the master (a worker that is not an EC2 latent worker)")
	f.BoolVar(&o.json, "json", false, "one JSON object on stdout")
	return cmd
}

// defaultStateFile is $XDG_STATE_HOME/latentworker/status.json, or
// ~/.local/state/latentworker/status.json.
func defaultStateFile() string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "latentworker", "status.json")
}

func runStatus(ctx context.Context, o *statusOptions) error {
	switch {
	case o.offlineAfter <= 0:
		return badInput{fmt.Errorf("--offline-after %s: must be positive", o.offlineAfter)}
	case o.maxAMIAge < 0:
		return badInput{fmt.Errorf("--max-ami-age %s: must not be negative", o.maxAMIAge)}
	case o.maxAge <= 0:
		return badInput{fmt.Errorf("--max-age %s: must be positive", o.maxAge)}
	case !strings.HasPrefix(o.masterURL, "http://") && !strings.HasPrefix(o.masterURL, "https://"):
		return badInput{fmt.Errorf("--master-url %q: must be the buildmaster's web URL, http(s)://HOST[:PORT]/", o.masterURL)}
	}
	cfg, err := o.cf.load()
	if err != nil {
		return err
	}
	if err := (scripts.Worker{Name: cfg.Worker.Name}).Validate(); err != nil {
		var fe *scripts.FieldError
		if errors.As(err, &fe) && fe.Field == "Name" {
			return badInput{fmt.Errorf("worker.name %q: %s", cfg.Worker.Name, fe.Rule)}
		}
	}
	opts := status.Options{
		Worker: cfg.Worker.Name, MasterURL: o.masterURL, OfflineAfter: o.offlineAfter,
		MaxAMIAge: o.maxAMIAge, MaxAge: o.maxAge, StateFile: o.stateFile,
	}
	if !o.noAWS {
		awsCfg, err := awsConfig(ctx, cfg)
		if err != nil {
			return err
		}
		opts.Region = awsCfg.Region
		opts.EC2 = ec2.NewFromConfig(awsCfg)
		opts.Clients = func(region string) cleanup.EC2API {
			return ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
				if region != "" {
					o.Region = region
				}
			})
		}
	}
	rep, err := status.Get(ctx, opts)
	if err != nil {
		return err
	}
	if o.json {
		if err := json.NewEncoder(o.stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		writeStatus(o.stdout, rep, time.Now())
	}
	for _, p := range []struct {
		problem string
		code    int
	}{{status.ProblemZombies, exitStatusZombies}, {status.ProblemOffline, exitStatusOffline}, {status.ProblemOldAMI, exitStatusOldAMI}} {
		if slices.Contains(rep.Problems, p.problem) {
			return exitCode{code: p.code}
		}
	}
	return nil
}

func writeStatus(w io.Writer, r *status.Report, now time.Time) {
	ago := func(d time.Duration) string { return cleanup.Round(d).String() }
	switch {
	case !r.Known:
		fmt.Fprintf(w, "worker %s: unknown to the master at %s\n", r.Worker, r.MasterURL)
	case r.Connected && !r.Since.IsZero():
		fmt.Fprintf(w, "worker %s: connected (seen so for %s)\n", r.Worker, ago(now.Sub(r.Since)))
	case r.Connected:
		fmt.Fprintf(w, "worker %s: connected\n", r.Worker)
	case !r.Since.IsZero():
		fmt.Fprintf(w, "worker %s: not connected (seen so for %s)\n", r.Worker, ago(now.Sub(r.Since)))
	default:
		fmt.Fprintf(w, "worker %s: not connected\n", r.Worker)
	}
	if b := r.LastBuild; b != nil {
		res := b.Result
		if res == "" {
			res = "running"
		}
		fmt.Fprintf(w, "last build: #%d (builder %d) %s, started %s ago\n", b.Number, b.BuilderID, res, ago(now.Sub(b.Started)))
	} else if r.Known {
		fmt.Fprintln(w, "last build: none")
	}
	if r.Known {
		fmt.Fprintf(w, "builds in the last day: %d\n", r.BuildsLastDay)
	}
	if r.Region != "" {
		if r.AMI != "" {
			fmt.Fprintf(w, "AMI in %s: %s (%s), %s old\n", r.Region, r.AMI, r.AMIName, ago(r.AMIAge))
		}
		fmt.Fprintf(w, "running instances: %d\n", len(r.Instances))
		for _, in := range r.Instances {
			fmt.Fprintf(w, "  %s %s %s, up %s\n", in.ID, in.Type, in.State, ago(in.Up))
		}
		fmt.Fprintf(w, "zombies: %d%s\n", len(r.Zombies), strings.Join(append([]string{""}, r.Zombies...), " "))
	}
	for _, x := range r.Warnings {
		fmt.Fprintln(w, "warning:", x)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "problems:", strings.Join(r.Problems, ", "))
	}
}
