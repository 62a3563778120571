package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/cleanup"
)

type sweepOptions struct {
	regions   []string
	worker    string
	maxAge    time.Duration
	grace     time.Duration
	masterURL string
	terminate bool
	yes       bool
	json      bool
	verbose   bool
	prune     bool
	keep      int
	stdout    io.Writer
	stderr    io.Writer
	stdin     io.Reader
}

const sweepExitHelp = `Exit codes (for cron: silent and 0 when nothing is found):
  0    nothing found
  1    found (report only)
  2    error
  3    found and acted (--terminate)
  130  interrupted`

func newSweep() *cobra.Command {
	o := &sweepOptions{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Find (and remove) zombie instances and what bakes left behind",
		Long: `sweep looks, in every enabled region (or --region), for:

  zombies    instances of a worker (launched from an AMI this tool baked, with
             the handoff's tags or the worker's instance profile) up longer
             than --max-age, measured from the primary network interface's
             attach time (LaunchTime resets on stop/start). With --master-url,
             an instance whose worker the buildmaster does not see connected
             is a zombie after --grace already, and one whose worker is
             connected never is, whatever its age (it may be mid-build).
  leftovers  what a bake run made and no longer uses (builder and verify
             instances, temporary key pairs and security groups, AMIs and
             snapshots of runs that did not complete) and anything past its
             latentworker:expires tag.

The default --max-age, 12h, is a long CPython build plus the master's
build_wait_timeout: an instance up longer has outlived any build the master
started it for. Nothing without this tool's or the handoff's tags is ever
touched, and a latentworker:protect tag excludes a resource whatever the
flags. Report only, unless --terminate (asks first; --yes for cron).
--prune-images --keep N deregisters the worker's older AMIs and deletes their
snapshots, never the newest N and never the last handed-off AMI.

` + sweepExitHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSweep(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.regions, "region", nil, "a region to sweep (repeatable; default every enabled region)")
	f.StringVar(&o.worker, "worker", "", "only this worker's resources")
	f.DurationVar(&o.maxAge, "max-age", cleanup.DefaultMaxAge, "an instance up longer than this is a zombie")
	f.DurationVar(&o.grace, "grace", cleanup.DefaultGrace, "with --master-url: how long an instance may run without its worker connected")
	f.StringVar(&o.masterURL, "master-url", "", "the buildmaster's web URL, to ask whether workers are connected")
	f.BoolVar(&o.terminate, "terminate", false, "remove what is found (after a confirmation)")
	f.BoolVar(&o.yes, "yes", false, "with --terminate: do not ask (for cron and timers)")
	f.BoolVar(&o.json, "json", false, "newline-delimited JSON on stdout")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "also print warnings (filters an endpoint does not support, an unreachable master)")
	f.BoolVar(&o.prune, "prune-images", false, "also deregister --worker's older AMIs and delete their snapshots")
	f.IntVar(&o.keep, "keep", 3, "with --prune-images: how many of the newest AMIs to keep")
	return cmd
}

// exitCode carries a command's own exit code; err may be nil.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e exitCode) Unwrap() error { return e.err }

func runSweep(ctx context.Context, o *sweepOptions) error {
	if o.prune && o.worker == "" {
		return exitCode{cleanup.ExitError, badInput{errors.New("--prune-images: needs --worker")}}
	}
	if o.yes && !o.terminate {
		return exitCode{cleanup.ExitError, badInput{errors.New("--yes: only with --terminate")}}
	}
	if err := checkSweepFlags(ctx, o); err != nil {
		return exitCode{cleanup.ExitError, badInput{err}}
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRetryer(awserr.NewRetryer))
	if err != nil {
		return exitCode{cleanup.ExitError, fmt.Errorf("loading AWS configuration: %w", err)}
	}
	if awsCfg.Region == "" && len(o.regions) == 0 {
		return exitCode{cleanup.ExitError, badInput{errors.New("--region: none given and no default region (AWS_REGION, the profile) to list the enabled regions from")}}
	}
	clients := func(region string) cleanup.EC2API {
		return ec2.NewFromConfig(awsCfg, func(opt *ec2.Options) {
			if region != "" {
				opt.Region = region
			}
		})
	}
	opts := cleanup.Options{Regions: o.regions, Worker: o.worker, MaxAge: o.maxAge, Grace: o.grace, MasterURL: o.masterURL}
	rep, err := cleanup.Find(ctx, clients, opts)
	if err != nil {
		return exitCode{cleanup.ExitError, err}
	}
	if o.prune {
		pr, err := cleanup.PlanPrune(ctx, clients, o.worker, o.keep, nil, opts)
		if err != nil {
			return exitCode{cleanup.ExitError, err}
		}
		rep.Findings = append(rep.Findings, pr.Findings...)
	}
	found := len(rep.Findings)
	if o.json {
		if err := rep.WriteJSON(o.stdout); err != nil {
			return exitCode{cleanup.ExitError, err}
		}
	} else if found > 0 {
		if err := rep.WriteText(o.stdout); err != nil {
			return exitCode{cleanup.ExitError, err}
		}
	}
	if o.verbose {
		for _, w := range rep.Warnings {
			fmt.Fprintln(o.stderr, "latentworker: warning:", w)
		}
	}
	if found == 0 || !o.terminate {
		return exitCode{cleanup.ExitCode(found, false, nil), nil}
	}
	if !o.yes {
		ok, err := confirm(o, found)
		if err != nil {
			return exitCode{cleanup.ExitError, err}
		}
		if !ok {
			fmt.Fprintln(o.stderr, "latentworker: nothing removed")
			return exitCode{cleanup.ExitFound, nil}
		}
	}
	res, err := cleanup.Act(ctx, clients, rep)
	if werr := writeResult(o, &res); werr != nil && err == nil {
		err = werr
	}
	if err != nil || len(res.Failed) > 0 {
		if err == nil {
			err = fmt.Errorf("%d removal(s) failed", len(res.Failed))
		}
		return exitCode{cleanup.ExitError, err}
	}
	return exitCode{cleanup.ExitActed, nil}
}

func writeResult(o *sweepOptions, res *cleanup.Result) error {
	if o.json {
		return res.WriteJSON(o.stdout)
	}
	return res.WriteText(o.stderr)
}

// confirm asks on the terminal before removing anything.
func confirm(o *sweepOptions, n int) (bool, error) {
	f, ok := o.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, badInput{errors.New("--terminate needs a confirmation: run it in a terminal, or add --yes")}
	}
	fmt.Fprintf(o.stderr, "Remove the %d resource(s) above? [y/N] ", n)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}

// checkSweepFlags refuses durations that are zero or negative and a master
// URL that is not an http(s) URL or does not answer like a buildbot REST
// API: a sweep must never fall back to a default silently.
func checkSweepFlags(ctx context.Context, o *sweepOptions) error {
	if o.maxAge <= 0 {
		return fmt.Errorf("--max-age %s: must be positive (an instance up longer than this is a zombie)", o.maxAge)
	}
	if o.grace <= 0 {
		return fmt.Errorf("--grace %s: must be positive", o.grace)
	}
	if o.keep < 1 {
		return fmt.Errorf("--keep %d: must be at least 1 (the newest image is never pruned)", o.keep)
	}
	if o.masterURL == "" {
		return nil
	}
	u, err := url.Parse(o.masterURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--master-url %q: must be the buildmaster's web URL, http(s)://HOST[:PORT]/", o.masterURL)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	api := strings.TrimSuffix(o.masterURL, "/") + "/api/v2/workers?limit=1"
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, api, nil)
	if err != nil {
		return fmt.Errorf("--master-url %q: %w", o.masterURL, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("--master-url %q: the master cannot be reached: %w", o.masterURL, err)
	}
	defer resp.Body.Close()
	var body struct {
		Workers []json.RawMessage `json:"workers"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body) != nil || body.Workers == nil {
		return fmt.Errorf("--master-url %q: %s does not answer like a buildbot REST API (HTTP %d)", o.masterURL, api, resp.StatusCode)
	}
	return nil
}
