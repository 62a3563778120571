package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
)

type bakeOptions struct {
	cf               *configFlags
	json             bool
	verbose          bool
	fromPrevious     bool
	keepOnFailure    bool
	terminateBuilder bool
	noVerify         bool
	debugKey         string
	manifest         string
	resume           string
	fleet            []string
	jp               *jsonPrinter // with --json, once the run started
	imageTimeout     time.Duration
	stdout, stderr   io.Writer
}

func newBake() *cobra.Command { return newBakeTo(os.Stdout, os.Stderr) }

func newBakeTo(stdout, stderr io.Writer) *cobra.Command {
	o := &bakeOptions{stdout: stdout, stderr: stderr}
	cmd := &cobra.Command{
		Use:   "bake",
		Short: "Bake a buildbot latent-worker AMI from a base AMI (or refresh the previous one)",
		Long: `bake launches the base AMI, provisions it over SSH into a buildbot worker
(the platform's buildbot-worker package, the service enabled at boot,
create-worker with the worker name, password and master, info/admin,
info/host, keepalive = 60, delete_leftover_dirs = 1), verifies that, applies
updates and reboots until none is pending, generalizes, stops the instance,
creates the AMI, waits for it, boots a throwaway instance from it to check the
worker starts on its own, and writes a manifest.

The worker password comes from the environment variable named by
worker.password_env, worker.password_file, or a prompt; never from a flag.

Everything the run creates is tagged with its run ID (latentworker:run-id).
On failure, Ctrl-C or SIGTERM it is removed in reverse order; a second Ctrl-C
exits at once and prints what is left and how to remove it. The builder
instance is left stopped, as the guide does, unless --terminate-builder.

Output: progress on stderr: on a terminal a live view redrawn in place (the
finished steps with their times, the current one with its elapsed time and
latest progress); to a pipe, a file or TERM=dumb, plain lines with elapsed
time and snapshot percent. The
result (AMI ID, region, manifest path) on stdout; with --json, one JSON event
per line on stdout, ending with a "result" object.

` + exitCodesHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := runBake(cmd.Context(), o)
			if o.json {
				endWithError(o.stdout, o.jp, err)
			}
			return err
		},
	}
	o.cf = addConfigFlags(cmd)
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "newline-delimited JSON events on stdout")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "show the provisioning scripts' output and every resource created")
	f.BoolVar(&o.fromPrevious, "from-previous", false, "start from the newest AMI this tool baked for the worker (updates + reboot) instead of the base AMI")
	f.BoolVar(&o.keepOnFailure, "keep-on-failure", false, "keep the builder instance when the run fails, for debugging")
	f.StringVar(&o.debugKey, "debug-key", "", "with --keep-on-failure: a public key file to authorize on the kept builder, so you can log in")
	f.BoolVar(&o.terminateBuilder, "terminate-builder", false, "terminate the builder instance once the AMI is available")
	f.BoolVar(&o.noVerify, "no-verify", false, "do not boot a throwaway instance from the new AMI to verify it")
	f.StringVar(&o.manifest, "manifest", "", "where to write the manifest JSON (default WORKER-RUNID.manifest.json)")
	f.StringArrayVar(&o.fleet, "fleet", nil, "bake several workers at once, one configuration `FILE` each (repeat the flag); each run is independent: one failing stops none of the others")
	f.StringVar(&o.resume, "resume", "", "finish run `RUN_ID`, whose image was kept when it failed (exit 5: still pending, or verified before a later step failed): wait for it, verify it, copy and release it, write the manifest; a run that finished already is left as it is (exit 0)")
	f.DurationVar(&o.imageTimeout, "image-timeout", 0, "how long to wait for the new image to become available (default: the platform's, 60m for Linux); a pending image is then kept for --resume")
	return cmd
}

// promptPassword reads the password from the terminal without echo, or is
// nil when stdin is not a terminal.
func promptPassword(stderr io.Writer) func(string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil
	}
	return func(label string) (string, error) {
		fmt.Fprint(stderr, label)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		return string(b), err
	}
}

func runBake(ctx context.Context, o *bakeOptions) error {
	if len(o.fleet) > 0 {
		return runFleet(ctx, o)
	}
	cfg, err := o.cf.load()
	if err != nil {
		return err
	}
	job, err := prepareBake(ctx, o, cfg)
	if err != nil {
		return err
	}
	var p printer
	switch {
	case o.json:
		o.jp = newJSONPrinter(o.stdout)
		p = o.jp
	case isLiveTerminal(o.stderr):
		// The view owns the terminal until it ends: the run's other
		// stderr lines go above it, and its result waits for its end.
		v := newLiveView(o.stderr, o.verbose)
		p = v.printer(cfg.Worker.Name, v)
		jo := *o
		jo.stderr = v
		var out bytes.Buffer
		err := job.run(ctx, &jo, p, &out)
		p.close()
		_, _ = io.Copy(o.stdout, &out)
		return err
	default:
		p = newTextPrinter(o.stderr, o.verbose)
	}
	defer p.close()
	return job.run(ctx, o, p, o.stdout)
}

// bakeJob is one worker's bake, checked and ready to run.
type bakeJob struct {
	cfg      *config.Config
	password config.Secret
	awsCfg   aws.Config
	debugKey string
	runID    string
	manifest string
}

// prepareBake checks everything a bake of cfg needs before anything is
// created: the configuration, the password, the flags, the AWS
// configuration.
func prepareBake(ctx context.Context, o *bakeOptions, cfg *config.Config) (*bakeJob, error) {
	verr := cfg.Validate()
	password, perr := cfg.Password(promptPassword(o.stderr))
	if err := errors.Join(verr, perr); err != nil {
		return nil, badInput{err}
	}
	debugKey, err := readDebugKey(o)
	if err != nil {
		return nil, err
	}
	if err := checkBakeFlags(o); err != nil {
		return nil, err
	}
	awsCfg, err := awsConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckCopyRegions(awsCfg.Region); err != nil {
		return nil, badInput{err}
	}
	j := &bakeJob{cfg: cfg, password: password, awsCfg: awsCfg, debugKey: debugKey, runID: fleet.NewRunID()}
	if o.resume != "" {
		j.runID = o.resume
	}
	j.manifest = o.manifest
	if j.manifest == "" {
		j.manifest = fmt.Sprintf("%s-%s.manifest.json", cfg.Worker.Name, j.runID)
	}
	if err := checkOutputPath("--manifest", j.manifest); err != nil {
		return nil, badInput{err}
	}
	return j, nil
}

// run bakes, reporting to p, and prints the result on stdout (text) or as
// p's result event.
func (j *bakeJob) run(ctx context.Context, o *bakeOptions, p printer, stdout io.Writer) error {
	cfg, runID, manifest := j.cfg, j.runID, j.manifest
	if jp, ok := p.(*jsonPrinter); ok {
		jp.emit(map[string]any{"type": "run", "run_id": runID, "worker": cfg.Worker.Name, "region": j.awsCfg.Region,
			"time": time.Now().UTC().Format(time.RFC3339Nano)})
	} else {
		fmt.Fprintf(o.stderr, "latentworker: baking worker %s in %s (run %s)\n", cfg.Worker.Name, j.awsCfg.Region, runID)
	}
	opts := bakeOptionsFor(cfg, j.password, j.awsCfg)
	opts.FromPrevious = o.fromPrevious
	opts.KeepOnFailure = o.keepOnFailure
	opts.DebugKey = j.debugKey
	opts.TerminateBuilder = o.terminateBuilder
	opts.NoVerify = o.noVerify
	opts.ManifestPath = manifest
	opts.Events = p
	opts.RunID = runID
	opts.Resume = o.resume
	opts.Timeouts.Image = o.imageTimeout
	res, err := bake.Run(ctx, opts)
	err = fieldError(err)
	if errors.Is(err, bake.ErrNoBaseImage) || errors.Is(err, bake.ErrUnfitInstance) || errors.Is(err, bake.ErrNoSSHCIDR) || errors.Is(err, bake.ErrNothingToResume) {
		// Found in preflight, before anything was created: the input is
		// what must change.
		err = badInput{err}
	}
	worker := cfg.Worker.Name
	if err == nil && res.State.Finished {
		// A resume of a run that had completed: nothing was changed.
		if _, ok := p.(*jsonPrinter); !ok {
			fmt.Fprintf(o.stderr, "latentworker: run %s finished already: image %s is released (%s); nothing was changed\n", runID, res.Manifest.ImageID, res.State.ReadySince)
		}
		if _, serr := os.Stat(manifest); serr != nil {
			manifest = "" // written where that run ran, if anywhere
		}
		printResult(stdout, p, res, manifest, runID)
		return nil
	}
	if err != nil && res != nil && res.Completed {
		// The image is the product and it is done: never lose it because
		// cleanup failed. The leftovers were printed as they were found.
		printResult(stdout, p, res, manifest, runID)
		what := "cleanup left resources behind"
		if errors.Is(err, bake.ErrCopy) {
			what = "not every copy succeeded (the image and the other copies are kept)"
		}
		return exitCode{code: exitBakedWithLeftovers, err: fmt.Errorf("baked %s, but %s: %w", res.Manifest.ImageID, what, err)}
	}
	if err != nil && res != nil && res.State != nil && res.State.ImageKept() {
		st := res.State
		why := "it is verified"
		if st.ImagePending {
			why = "it is still pending"
		}
		resume := "latentworker bake --resume " + runID
		if jp, ok := p.(*jsonPrinter); ok {
			jp.emit(map[string]any{"type": "error", "worker": worker, "error": err.Error(), "run_id": runID, "image_id": st.ImageID,
				"image_pending": st.ImagePending, "image_kept": true, "resume": resume, "leftovers": resLeftovers(res)})
		}
		if !st.ImagePending { // the pending error names the resume already
			err = fmt.Errorf("%w\nthe image %s is kept (%s); to finish the run: %s", err, st.ImageID, why, resume)
		}
		return exitCode{code: exitImagePending, err: err}
	}
	if err != nil {
		if jp, ok := p.(*jsonPrinter); ok {
			jp.emit(map[string]any{"type": "error", "worker": worker, "error": err.Error(), "run_id": runID, "leftovers": resLeftovers(res)})
		}
		if res != nil && o.keepOnFailure && res.State != nil && res.State.InstanceID != "" {
			st := res.State
			how := "nobody can log in to it: the run's own key is gone; next time add --debug-key ~/.ssh/id_ed25519.pub"
			if st.DebugKeyAdded {
				how = fmt.Sprintf("log in with: ssh -i YOUR_PRIVATE_KEY %s@%s", cfg.Image.EffectiveSSHUser(), st.InstanceAddr)
			}
			fmt.Fprintf(o.stderr, "latentworker: kept builder %s at %s for debugging; %s\nlatentworker: when done: aws ec2 terminate-instances --instance-ids %s --region %s, then delete security group %s\n",
				st.InstanceID, st.InstanceAddr, how, st.InstanceID, j.awsCfg.Region, st.SecurityGroupID)
		}
		return err
	}
	printResult(stdout, p, res, manifest, runID)
	return nil
}

// printResult prints the baked image: the result event, or the lines on
// stdout.
func printResult(stdout io.Writer, p printer, res *bake.Result, manifest, runID string) {
	m := res.Manifest
	abs := ""
	if manifest != "" {
		abs, _ = filepath.Abs(manifest)
	}
	if jp, ok := p.(*jsonPrinter); ok {
		ev := map[string]any{"type": "result", "worker": m.Worker, "image_id": m.ImageID, "image_name": m.ImageName, "region": m.Region,
			"replaces": m.Replaces, "manifest": abs, "run_id": runID, "leftovers": resLeftovers(res)}
		if res.State != nil && res.State.Finished {
			ev["already_finished"] = true
		}
		if len(m.Copies) > 0 {
			ev["copies"] = m.Copies
		}
		if len(m.CopyFailures) > 0 {
			ev["copy_failures"] = m.CopyFailures
		}
		if m.Encrypted {
			ev["encrypted"] = true
		}
		jp.emit(ev)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "image_id: %s\nimage_name: %s\nregion: %s\n", m.ImageID, m.ImageName, m.Region)
	for _, r := range slices.Sorted(maps.Keys(m.Copies)) {
		fmt.Fprintf(&b, "copy: %s %s\n", r, m.Copies[r])
	}
	for _, r := range slices.Sorted(maps.Keys(m.CopyFailures)) {
		fmt.Fprintf(&b, "copy_failed: %s\n", r)
	}
	if m.Replaces != "" {
		fmt.Fprintf(&b, "replaces: %s\n", m.Replaces)
	}
	if abs != "" {
		fmt.Fprintf(&b, "manifest: %s\n", abs)
	}
	_, _ = io.WriteString(stdout, b.String())
}

// checkBakeFlags checks the flags that the configuration does not.
func checkBakeFlags(o *bakeOptions) error {
	if o.imageTimeout < 0 {
		return badInput{fmt.Errorf("--image-timeout %s: must be positive", o.imageTimeout)}
	}
	if o.resume != "" {
		if _, err := fleet.RunIDTime(o.resume); err != nil {
			return badInput{fmt.Errorf("--resume %q: not a run ID (like 20261201T084118Z-dcfaf1, as bake printed it)", o.resume)}
		}
		if o.fromPrevious {
			return badInput{errors.New("--resume: not with --from-previous (it finishes an earlier run)")}
		}
	}
	return nil
}

// checkOutputPath checks, before anything is created, that a file can be
// written at path: its directory exists, and path is not a directory.
func checkOutputPath(flag, path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s %s: its directory: %w", flag, path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s %s: %s is not a directory", flag, path, dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s %s: is a directory; give a file name", flag, path)
	}
	return nil
}

func resLeftovers(res *bake.Result) []bake.Leftover {
	if res == nil {
		return nil
	}
	return res.Leftovers
}

// awsConfig loads the SDK's default chain (profiles, SSO, environment,
// AWS_ENDPOINT_URL) with the configured region on top.
func awsConfig(ctx context.Context, cfg *config.Config) (aws.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.AWS.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.AWS.Region))
	}
	opts = append(opts, awsconfig.WithRetryer(awserr.NewRetryer))
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if strings.TrimSpace(awsCfg.Region) == "" {
		return aws.Config{}, badInput{errors.New("aws.region: not set: set it in the config file, --region, LATENTWORKER_REGION, AWS_REGION, or the profile")}
	}
	return awsCfg, nil
}

// readDebugKey reads and checks --debug-key.
func readDebugKey(o *bakeOptions) (string, error) {
	if o.debugKey == "" {
		return "", nil
	}
	if !o.keepOnFailure {
		return "", badInput{errors.New("--debug-key: only with --keep-on-failure (it is authorized on a builder kept after a failure)")}
	}
	b, err := os.ReadFile(o.debugKey)
	if err != nil {
		return "", badInput{fmt.Errorf("--debug-key: %w", err)}
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey(b); err != nil {
		return "", badInput{fmt.Errorf("--debug-key %s: not an SSH public key (%v); give the .pub file", o.debugKey, err)}
	}
	return strings.TrimSpace(string(b)), nil
}
