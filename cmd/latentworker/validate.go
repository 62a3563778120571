package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/spf13/cobra"

	"github.com/latentworker/latentworker/bake"
	"github.com/latentworker/latentworker/config"
)

type validateOptions struct {
	cf      *configFlags
	offline bool
	stdout  io.Writer
}

func newValidate() *cobra.Command {
	o := &validateOptions{stdout: os.Stdout}
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration, and against AWS, before anything costs money",
		Long: `validate checks every field of the configuration (file, then LATENTWORKER_*
environment variables, then flags) and that the worker password can be read
(without prompting). Every error names the field and what is allowed.

Then, unless --offline, it asks AWS, creating nothing: that the credentials
work (STS), that the base AMI exists (or which one the owner + name filter
picks), that its architecture fits the instance type, and that the instance
type has at least 2 vCPUs and 512 MiB, the buildbot worker guide's minimum,
that the subnet (aws.subnet_id, or the default VPC's) exists, offers the
type and lets bake reach the builder, that the copy regions are enabled
and allowed, and, with IAM's simulation of the caller's policies
(iam:SimulatePrincipalPolicy), that the caller may take every action bake
takes: a denied one is named with the policy IAM says denies it (exit 2).
A caller that cannot be simulated (the root user, or one not allowed to
simulate) is told so, and validation goes on.

` + exitCodesHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runValidate(cmd.Context(), o)
		},
	}
	o.cf = addConfigFlags(cmd)
	cmd.Flags().BoolVar(&o.offline, "offline", false, "check the configuration only; do not ask AWS")
	return cmd
}

func runValidate(ctx context.Context, o *validateOptions) error {
	cfg, err := o.cf.load()
	if err != nil {
		return err
	}
	verr := cfg.Validate()
	if cfg.AWS.Region != "" {
		verr = errors.Join(verr, cfg.CheckCopyRegions(cfg.AWS.Region))
	}
	password, perr := cfg.Password(nil)
	if err := errors.Join(verr, perr); err != nil {
		return badInput{err}
	}
	if o.offline {
		fmt.Fprintln(os.Stderr, "latentworker: configuration is valid (not checked against AWS: --offline)")
		return nil
	}
	awsCfg, err := awsConfig(ctx, cfg)
	if err != nil {
		return err
	}
	if err := cfg.CheckCopyRegions(awsCfg.Region); err != nil {
		return badInput{err}
	}
	st, err := bake.Check(ctx, bakeOptionsFor(cfg, password, awsCfg))
	if err != nil {
		return fieldError(err)
	}
	fmt.Fprintf(o.stdout, "caller: %s\nregion: %s\nbase_image: %s (%s)\ninstance_type: %s\nsubnet: %s (%s, %s)\nssh: %s, from %s\n",
		st.CallerARN, awsCfg.Region, st.BaseAMI, st.BaseName, cfg.AWS.InstanceType,
		st.Network.SubnetID, st.Network.VpcID, st.Network.AvailabilityZone, st.Network.Address(), st.SSHCIDR)
	if st.Replaces != "" {
		fmt.Fprintf(o.stdout, "replaces: %s\n", st.Replaces)
	}
	if err := checkPermissions(ctx, o.stdout, st, awsCfg); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "latentworker: configuration is valid")
	return nil
}

// checkPermissions asks IAM whether the caller may take the actions bake
// takes (iam:SimulatePrincipalPolicy on the caller's identity, with the
// run's resources). A denied action is bad input naming the action, the
// resource and the statements IAM names; a caller that cannot be simulated
// (the root user, one not allowed to simulate) is told so, and validation
// goes on.
func checkPermissions(ctx context.Context, stdout io.Writer, st *bake.State, awsCfg aws.Config) error {
	source, err := bake.SimulationSource(st.CallerARN)
	var denied []bake.Denial
	perms := st.Permissions(accountOf(st.CallerARN))
	if err == nil {
		denied, err = bake.SimulatePermissions(ctx, iam.NewFromConfig(awsCfg), source, perms)
	}
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "latentworker: not checking the caller's permissions (iam:SimulatePrincipalPolicy): %v\n", err)
		fmt.Fprintln(stdout, "permissions: not checked")
		return nil
	case len(denied) > 0:
		// One line per action and reason, its resources together.
		var lines []string
		actions := map[string]bool{}
		for i := 0; i < len(denied); {
			d, j := denied[i], i+1
			res := []string{d.Resource}
			for ; j < len(denied) && denied[j].Action == d.Action && denied[j].Decision == d.Decision && slices.Equal(denied[j].Statements, d.Statements); j++ {
				res = append(res, denied[j].Resource)
			}
			d.Resource = strings.Join(res, ", ")
			lines = append(lines, "  "+d.String())
			actions[d.Action] = true
			i = j
		}
		return badInput{fmt.Errorf("the caller %s may not take %d of the actions bake takes (IAM's simulation of its policies):\n%s", st.CallerARN, len(actions), strings.Join(lines, "\n"))}
	}
	fmt.Fprintf(stdout, "permissions: the %d actions bake takes are allowed to %s\n", len(perms), source)
	return nil
}

// accountOf is the account of an ARN.
func accountOf(arn string) string {
	if parts := strings.SplitN(arn, ":", 6); len(parts) == 6 {
		return parts[4]
	}
	return ""
}

// bakeOptionsFor are the options every AWS-facing command shares.
func bakeOptionsFor(cfg *config.Config, password config.Secret, awsCfg aws.Config) bake.Options {
	return bake.Options{
		Config:   cfg,
		Password: password,
		EC2:      ec2.NewFromConfig(awsCfg),
		STS:      sts.NewFromConfig(awsCfg),
		Region:   awsCfg.Region,
		Endpoint: aws.ToString(awsCfg.BaseEndpoint),
		RegionEC2: func(region string) bake.EC2API {
			return ec2.NewFromConfig(awsCfg, func(o *ec2.Options) { o.Region = region })
		},
		RegionKMS: func(region string) bake.KMSAPI {
			return kms.NewFromConfig(awsCfg, func(o *kms.Options) { o.Region = region })
		},
	}
}

// fieldError names the config field behind a preflight error and marks it
// as bad input.
func fieldError(err error) error {
	switch {
	case errors.Is(err, bake.ErrUnfitInstance):
		return badInput{fmt.Errorf("aws.instance_type (with the base image): %w", err)}
	case errors.Is(err, bake.ErrNoBaseImage):
		return badInput{fmt.Errorf("image.base_ami, or image.base_owner and image.base_name: %w", err)}
	case errors.Is(err, bake.ErrNoSSHCIDR):
		return badInput{fmt.Errorf("aws.ssh_cidr: %w", err)}
	case errors.Is(err, bake.ErrBadKMSKey):
		return badInput{fmt.Errorf("image.kms_key_id: %w", err)}
	case errors.Is(err, bake.ErrNetwork), errors.Is(err, bake.ErrRootVolume), errors.Is(err, bake.ErrCopyRegion):
		// The message names the key.
		return badInput{err}
	}
	return err
}
