package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/handoff"
)

type handoffOptions struct {
	cf         *configFlags
	ami        string
	findNewest bool
	keyPair    string
	publicKey  string
	rotate     bool
	retireOld  bool
	showSecret bool
	secretFile string
	encryptTo  []string
	format     string
	buildWait  time.Duration
	check      bool
	checkWait  time.Duration
	stdout     io.Writer
	stderr     io.Writer
}

func newHandoff() *cobra.Command {
	o := &handoffOptions{stdout: os.Stdout, stderr: os.Stderr}
	cmd := &cobra.Command{
		Use:   "handoff",
		Short: "Give the buildmaster admins what they need: a least-privilege key and the bundle",
		Long: `handoff prepares what the buildmaster's EC2LatentWorker needs and prints, in
this order: (1) the guide's four items (instance size, full region, AMI ID,
access key ID) and the key pair, security group, subnet, instance profile and
tags the key is limited to; (2) the private settings for a CPython-shaped
master's settings.yaml (worker password, key, EC2 values), only with
--show-secret, else where they are; (3) the public change to its worker class
(an EC2LatentWorker when the worker's settings have an "ec2" section, a plain
Worker otherwise) and the requirement (boto3); (4) a master.cfg block for
other masters (buildbot 3.7 or 4.x). --format selects one of them.

It creates or updates, idempotently: the key pair the master names (imported
from --public-key; the private key stays with you), a security group with no
inbound rules, the worker's instance profile (a role with no permissions), an
IAM user under /latentworker/ with a policy that allows only the calls
EC2LatentWorker makes, in this region, for this worker's AMI, and an access
key. Run it again after a refresh: it reuses the user and key, moves the
policy to the new AMI and says what changed.

With --find-newest the master is given no AMI: it finds the worker's newest
completed AMI itself at each launch (valid_ami_owners and
valid_ami_location_regex), and the policy lets the key launch only the
account's images tagged as this worker's completed bakes (latentworker:ready),
so a refresh needs no new handoff and no admin.

The secret key and the worker password (from worker.password_env or
worker.password_file, or a prompt) go to a file created 0600 (--secret-file)
with everything above, not to the terminal unless --show-secret; --encrypt-to writes the whole bundle encrypted to an
age recipient or SSH public key, for mailing. The AMI holds the worker
password: handoff refuses a public AMI.

` + exitCodesHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHandoff(cmd.Context(), o)
		},
	}
	o.cf = addConfigFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.ami, "ami", "", "the AMI to hand off (default: the newest this tool baked for the worker)")
	f.BoolVar(&o.findNewest, "find-newest", false, "hand off no fixed AMI: the master finds the worker's newest completed AMI by itself (valid_ami_owners, valid_ami_location_regex) and the key may launch only the account's images tagged as this worker's completed bakes, so a refresh needs no admin")
	f.StringVar(&o.keyPair, "key-pair-name", "", "the EC2 key pair the master names (default latentworker-WORKER)")
	f.StringVar(&o.publicKey, "public-key", "", "public key file to import as that key pair when it does not exist")
	f.BoolVar(&o.rotate, "rotate", false, "create a second access key (the old one stays active until --retire-old)")
	f.BoolVar(&o.retireOld, "retire-old", false, "delete the older access key, once the admins use the newer one")
	f.BoolVar(&o.showSecret, "show-secret", false, "print the secret access key too")
	f.StringVar(&o.secretFile, "secret-file", "", "where to write the bundle with the secret, 0600 (default WORKER-ACCESSKEYID.secret)")
	f.StringArrayVar(&o.encryptTo, "encrypt-to", nil, "also write the bundle encrypted to this age recipient or SSH public key (WORKER-handoff.age); repeatable")
	f.StringVar(&o.format, "format", "text", "what goes to stdout: text (everything, in order), settings (the private settings.yaml fragment; needs --show-secret), worker-class (the public worker class change), snippet (master.cfg for other masters), or json")
	f.DurationVar(&o.buildWait, "build-wait-timeout", handoff.DefaultBuildWaitTimeout, "how long the master keeps an idle instance for the next build before terminating it (build_wait_timeout=; whole seconds, 1s to 24h)")
	f.BoolVar(&o.check, "check", false, "only check the current handoff, creating and changing nothing: the key's dry-run launch and the master's other calls (every handoff ends with this check)")
	f.DurationVar(&o.checkWait, "check-wait", handoff.DefaultCheckWait, "how long the check waits for a new key to work and its policy to apply")
	return cmd
}

func runHandoff(ctx context.Context, o *handoffOptions) error {
	switch o.format {
	case "text", "json", "snippet", "worker-class":
	case "settings":
		if !o.showSecret {
			return badInput{fmt.Errorf("--format settings prints the worker password and the secret access key: add --show-secret, or take the settings from the 0600 secret file")}
		}
	default:
		return badInput{fmt.Errorf("--format %q: must be text, settings, worker-class, snippet or json", o.format)}
	}
	if o.findNewest && o.ami != "" {
		return badInput{errors.New("--find-newest and --ami: the master either finds the newest AMI or runs the one given, not both")}
	}
	if o.checkWait < 0 {
		return badInput{fmt.Errorf("--check-wait %s: must not be negative", o.checkWait)}
	}
	if o.check && (o.rotate || o.retireOld || o.publicKey != "" || len(o.encryptTo) > 0) {
		return badInput{errors.New("--check changes nothing: it takes no --rotate, --retire-old, --public-key or --encrypt-to")}
	}
	if o.buildWait < time.Second || o.buildWait > 24*time.Hour || o.buildWait%time.Second != 0 {
		return badInput{fmt.Errorf("--build-wait-timeout %s: must be whole seconds from 1s to 24h", o.buildWait)}
	}
	cfg, err := o.cf.load()
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return badInput{err}
	}
	if err := handoff.CheckInputs(cfg.Worker.Name, cfg.Worker.Master, o.keyPair, o.ami, cfg.AWS.SubnetID); err != nil {
		return badInput{err}
	}
	pub := ""
	if o.publicKey != "" {
		b, err := os.ReadFile(o.publicKey)
		if err != nil {
			return badInput{fmt.Errorf("--public-key: %w", err)}
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return badInput{fmt.Errorf("--public-key %s: not an SSH public key (%v)", o.publicKey, err)}
		}
		p, _ := cfg.Image.PlatformInfo()
		if err := handoff.CheckImportable(k, p); err != nil {
			return badInput{fmt.Errorf("--public-key %s: %w", o.publicKey, err)}
		}
		pub = string(b)
	}
	for _, r := range o.encryptTo {
		if _, err := handoff.ParseRecipient(r); err != nil {
			return badInput{fmt.Errorf("--encrypt-to: %w", err)}
		}
	}
	// Where a new secret goes is checked before anything is created: a key
	// whose secret cannot be written is never made.
	encFile := cfg.Worker.Name + "-handoff.age"
	if !o.check {
		var err error
		if o.secretFile != "" {
			err = handoff.CheckSecretFile(o.secretFile, true)
		} else {
			// WORKER-KEYID.secret here: the key's ID is not known yet.
			err = handoff.CheckOutputDir(cfg.Worker.Name + "-KEYID.secret")
		}
		if err != nil {
			return badInput{fmt.Errorf("--secret-file: %w", err)}
		}
		if len(o.encryptTo) > 0 {
			if err := handoff.CheckOutputDir(encFile); err != nil {
				return badInput{fmt.Errorf("--encrypt-to: %w", err)}
			}
		}
	}
	// The worker password goes into the private settings (the 0600 file),
	// from the config's source (environment variable, 0600 file or a
	// prompt), never a flag. Without one, the settings say to keep the
	// password the admins have.
	var password config.Secret
	if !o.check {
		password, err = cfg.Password(promptPassword(o.stderr))
		if err != nil && !errors.Is(err, config.ErrNoPassword) {
			return badInput{err}
		}
	}
	awsCfg, err := awsConfig(ctx, cfg)
	if err != nil {
		return err
	}
	secretFile := o.secretFile
	stored := false
	store := func(b handoff.Bundle) error {
		if secretFile == "" {
			// One file per key: a rotation never meets the previous file.
			secretFile = b.WorkerName + "-" + b.AccessKeyID + ".secret"
		}
		b.Password = password
		if err := handoff.WriteSecretFile(secretFile, b, o.secretFile != ""); err != nil {
			return fmt.Errorf("writing the secret file: %w", err)
		}
		stored = true
		return nil
	}
	res, err := handoff.Run(ctx, handoff.Options{
		Worker: cfg.Worker.Name, MasterAddress: cfg.Worker.Master, Region: awsCfg.Region,
		InstanceTypes: []string{cfg.AWS.InstanceType}, SubnetID: cfg.AWS.SubnetID,
		AMI: o.ami, FindNewest: o.findNewest, NamePrefix: cfg.Image.NamePrefix, KeyPairName: o.keyPair, PublicKey: pub, Rotate: o.rotate, RetireOld: o.retireOld,
		BuildWaitTimeout: o.buildWait, CheckOnly: o.check,
		WantNewSecret: o.showSecret || len(o.encryptTo) > 0, StoreSecret: store,
		// A copy region's master (handoff --region R, R in
		// aws.copy_to_regions) gets a key of its own, scoped to R.
		RegionalUser: slices.Contains(cfg.AWS.CopyToRegions, awsCfg.Region),
		EC2:          ec2.NewFromConfig(awsCfg), KMS: kms.NewFromConfig(awsCfg),
		IAM: awsiam.NewFromConfig(awsCfg), STS: sts.NewFromConfig(awsCfg),
	})
	if err != nil {
		if errors.Is(err, handoff.ErrPublicImage) || errors.Is(err, handoff.ErrNoImage) || errors.Is(err, handoff.ErrNoNewSecret) {
			return badInput{err}
		}
		return err
	}
	b := res.Bundle
	b.Password = password
	// check runs handoff.Check with the handed-off key: its secret from
	// this run, or from the secret file handoff wrote for it.
	check := func(secretFile string) error {
		co := handoff.CheckOptions{Bundle: b, UserARN: res.UserARN, InstanceProfileARN: res.InstanceProfileARN,
			AccountID: res.AccountID, IAM: awsiam.NewFromConfig(awsCfg), Wait: o.checkWait}
		secret := b.SecretAccessKey.Reveal()
		if secret == "" {
			if secretFile == "" {
				secretFile = b.WorkerName + "-" + b.AccessKeyID + ".secret"
			}
			secret = secretFromFile(secretFile)
		}
		if secret != "" {
			keyCfg := awsCfg.Copy()
			keyCfg.Credentials = credentials.NewStaticCredentialsProvider(b.AccessKeyID, secret, "")
			co.Key = ec2.NewFromConfig(keyCfg)
		} else {
			fmt.Fprintf(o.stderr, "latentworker: check: the secret of %s is not here (no %s): its dry-run launch is not checked\n", b.AccessKeyID, secretFile)
		}
		fmt.Fprintf(o.stderr, "latentworker: check: the master's calls with the key %s\n", b.AccessKeyID)
		if err := handoff.Check(ctx, co); err != nil {
			return err
		}
		what := "its dry-run launch with the snippet's arguments and "
		if co.Key == nil {
			what = ""
		}
		fmt.Fprintf(o.stderr, "latentworker: check passed: %sDescribeInstances, GetConsoleOutput, CreateTags and TerminateInstances are allowed\n", what)
		return nil
	}
	if o.check {
		if res.PolicyDiffers {
			fmt.Fprintf(o.stderr, "latentworker: check: the key's policy is not the one handoff writes (latentworker handoff restores it); checking it as it is\n")
		}
		return check(o.secretFile)
	}
	for _, c := range res.Created {
		fmt.Fprintf(o.stderr, "latentworker: created %s\n", c)
	}
	for _, k := range res.Retired {
		fmt.Fprintf(o.stderr, "latentworker: deleted the older access key %s\n", k.ID)
	}
	if res.IMDSv2Set {
		fmt.Fprintf(o.stderr, "latentworker: AMI %s now requires IMDSv2 (imds-support v2.0) on every instance launched from it\n", b.AMI)
	}
	if res.PolicyChanged {
		fmt.Fprintf(o.stderr, "latentworker: the key's policy now allows %s\n", b.AMI)
	}
	if b.Changes.OldAMI != "" {
		fmt.Fprintf(o.stderr, "latentworker: changed since the last handoff: AMI %s -> %s (the admins swap this one value)\n", b.Changes.OldAMI, b.AMI)
	}
	if stored {
		fmt.Fprintf(o.stderr, "latentworker: wrote the bundle with the secret access key to %s (0600)\n", secretFile)
		if len(o.encryptTo) > 0 {
			full, err := handoff.Full(b)
			if err != nil {
				return err
			}
			enc, err := handoff.EncryptTo(o.encryptTo, full)
			if err != nil {
				return err
			}
			if err := os.WriteFile(encFile, enc, 0o644); err != nil {
				return fmt.Errorf("writing %s (the secret is in %s): %w", encFile, secretFile, err)
			}
			fmt.Fprintf(o.stderr, "latentworker: wrote the bundle encrypted to %s to %s, to mail\n", strings.Join(o.encryptTo, ", "), encFile)
		}
	} else {
		secretFile = ""
		fmt.Fprintf(o.stderr, "latentworker: the access key %s is unchanged; the admins keep the secret they have\n", b.AccessKeyID)
	}
	fmt.Fprintf(o.stderr, "latentworker: %s\n", handoff.AMIWarning)
	var out string
	switch o.format {
	case "json":
		j, err := handoff.JSON(b, o.showSecret)
		if err != nil {
			return err
		}
		out = string(j)
	case "snippet":
		out, err = handoff.MasterCfgSnippet(b)
	case "worker-class":
		out, err = handoff.WorkerClassChange(b)
	case "settings":
		out, err = handoff.SettingsFragment(b)
	default:
		out, err = handoff.Document(b, handoff.TextOptions{ShowSecret: o.showSecret, SecretFile: secretFile})
	}
	if err != nil {
		return err
	}
	fmt.Fprint(o.stdout, strings.TrimRight(out, "\n")+"\n")
	return check(cmp.Or(secretFile, o.secretFile))
}

// secretKeyRE finds a secret access key in a handoff secret file, whatever
// its format (JSON, YAML, Python).
var secretKeyRE = regexp.MustCompile(`(?i)secret[_a-z]*["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})["'\s,]`)

// secretFromFile returns the secret access key in a handoff secret file,
// or "" (the file is missing, unsafe or has none).
func secretFromFile(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if m := secretKeyRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}
