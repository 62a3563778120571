package bake

// Instances: launching, waiting for, connecting to and stopping them.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
)

// runInstance launches one instance of role from ami and pushes its undo.
func (s *State) runInstance(ctx context.Context, ami string, role fleet.Role, kind Kind) (string, *undoItem, error) {
	cfg := s.opts.Config
	name := fleet.AMIName(cfg.Image.NamePrefix, cfg.Worker.Name, s.now()) + "-" + string(role)
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(ami),
		InstanceType: types.InstanceType(cfg.AWS.InstanceType),
		KeyName:      aws.String(s.KeyName),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		// The same token on the SDK's retries: a launch whose answer was
		// lost returns the same instance instead of a second one. The
		// attempt is part of it: a resume's launch under the run's ID
		// must not be answered with an earlier attempt's instance.
		ClientToken: aws.String(s.RunID + "-" + string(role) + "-" + s.attempt),
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpTokens:   types.HttpTokensStateRequired,
			HttpEndpoint: types.InstanceMetadataEndpointStateEnabled,
		},
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String(s.RootDevice),
			Ebs: &types.EbsBlockDevice{
				VolumeSize:          aws.Int32(int32(cfg.Image.RootVolumeGiB)),
				VolumeType:          types.VolumeTypeGp3,
				DeleteOnTermination: aws.Bool(true),
			},
		}},
		TagSpecifications: []types.TagSpecification{
			s.labels.Spec(types.ResourceTypeInstance, role, name),
			s.labels.Spec(types.ResourceTypeVolume, fleet.RoleVolume, name),
		},
	}
	if cfg.Image.IsEncrypted() {
		// The root volume, and so the image's snapshot, encrypted with
		// the key asked for (nil: the region's default EBS key).
		ebs := in.BlockDeviceMappings[0].Ebs
		ebs.Encrypted = aws.Bool(true)
		if cfg.Image.KMSKeyID != "" {
			ebs.KmsKeyId = aws.String(cfg.Image.KMSKeyID)
		}
	}
	s.Network.launchNetwork(in, s.SecurityGroupID)
	if cfg.AWS.HostID != "" {
		in.Placement = &types.Placement{Tenancy: types.TenancyHost, HostId: aws.String(cfg.AWS.HostID)}
	}
	// A platform reached through its launch user data (Windows: OpenSSH,
	// the temporary key, host keys on the console); it holds no secret.
	switch ud, err := scripts.UserData(s.Platform, s.PublicKey); {
	case err == nil:
		in.UserData = aws.String(base64.StdEncoding.EncodeToString(ud))
	case !errors.Is(err, scripts.ErrUnsupported):
		return "", nil, fmt.Errorf("launching %s instance from %s: %w", role, ami, err)
	}
	out, err := s.opts.EC2.RunInstances(s.creating(ctx), in)
	if err != nil {
		return "", nil, fmt.Errorf("launching %s instance from %s: %w", role, ami, err)
	}
	if len(out.Instances) != 1 {
		return "", nil, fmt.Errorf("launching %s instance from %s: got %d instances", role, ami, len(out.Instances))
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	it := s.undo.push(kind, "instance", id, s.cmd("terminate-instances --instance-ids %s", id), func(ctx context.Context) error {
		return s.terminate(ctx, id)
	})
	return id, it, nil
}

// terminate terminates instance id and waits until it is gone.
//
// NotFound from TerminateInstances is not proof that it is gone (a new
// instance may not be visible yet): DescribeInstances must confirm it, and
// until it does the terminate is tried again.
func (s *State) terminate(ctx context.Context, id string) error {
	since := time.Now()
	err := poll(ctx, min(s.opts.Timeouts.Poll, time.Second), func() (bool, error) {
		_, err := s.opts.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if !awserr.NotFound(err) {
			return true, err
		}
		return s.terminated(ctx, id, since)
	})
	if err != nil {
		return err
	}
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Stop)
	defer cancel()
	err = s.pollSchedule(wctx, TransTerminated, id, func() (bool, error) {
		st, err := s.instanceState(wctx, id)
		if awserr.NotFound(err) {
			// It was seen, and terminated long enough ago to be forgotten.
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return st.state == types.InstanceStateNameTerminated, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for instance %s to terminate: %w", id, err)
	}
	return nil
}

// instanceView is what a wait needs of an instance.
type instanceView struct {
	state types.InstanceStateName
	addr  string
	// reason is why it changed state ("Server.InsufficientInstanceCapacity:
	// ..."), when EC2 says.
	reason string
}

// instanceState describes instance id; a missing instance is NotFound.
func (s *State) instanceState(ctx context.Context, id string) (instanceView, error) {
	out, err := s.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return instanceView{}, err
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.InstanceId) != id || in.State == nil {
				continue
			}
			v := instanceView{state: in.State.Name, addr: s.Network.addressOf(in)}
			if r := in.StateReason; r != nil && aws.ToString(r.Message) != "" {
				v.reason = aws.ToString(r.Message)
				if c := aws.ToString(r.Code); c != "" && !strings.HasPrefix(v.reason, c) {
					v.reason = c + ": " + v.reason
				}
			}
			return v, nil
		}
	}
	return instanceView{}, &notFoundError{id}
}

// notFoundError is an instance missing from a DescribeInstances answer,
// classified like EC2's own InvalidInstanceID.NotFound.
type notFoundError struct{ id string }

func (e *notFoundError) Error() string {
	return "InvalidInstanceID.NotFound: instance " + e.id + " is not in the answer"
}
func (e *notFoundError) ErrorCode() string    { return "InvalidInstanceID.NotFound" }
func (e *notFoundError) ErrorMessage() string { return e.Error() }
func (e *notFoundError) ErrorFault() smithy.ErrorFault {
	return smithy.FaultClient
}

func launch(ctx context.Context, s *State) error {
	id, it, err := s.runInstance(ctx, s.BaseAMI, fleet.RoleBuilder, KindBuilder)
	if err != nil {
		return err
	}
	s.InstanceID, s.builder = id, it
	return nil
}

// waitInstance waits until id runs and returns its public address. A new
// instance may be NotFound for a while (eventual consistency); one that
// stops or terminates instead of running ends the wait.
func (s *State) waitInstance(ctx context.Context, id string) (string, error) {
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Running)
	defer cancel()
	launched := time.Now()
	var addr string
	err := s.pollSchedule(wctx, TransRunning, id, func() (bool, error) {
		v, err := s.instanceState(wctx, id)
		switch {
		case awserr.NotFound(err) && time.Since(launched) < consistencyWindow:
			return false, nil
		case err != nil:
			return false, err
		}
		switch v.state {
		case types.InstanceStateNameRunning:
			addr = v.addr
			return true, nil
		case types.InstanceStateNamePending:
			return false, nil
		}
		if v.reason != "" {
			return false, fmt.Errorf("instance is %s (%s)", v.state, v.reason)
		}
		return false, fmt.Errorf("instance is %s", v.state)
	})
	if err != nil {
		return "", fmt.Errorf("waiting for instance %s to run: %w", id, err)
	}
	if addr == "" {
		return "", fmt.Errorf("instance %s runs but has no %s in %s (aws.subnet_id, aws.associate_public_ip, aws.ssh_address)", id, s.Network.Address(), s.Network.SubnetID)
	}
	return addr, nil
}

func waitRunning(ctx context.Context, s *State) error {
	addr, err := s.waitInstance(ctx, s.InstanceID)
	s.InstanceAddr = addr
	return err
}

// dialInstance reads id's host keys from its console and connects.
func (s *State) dialInstance(ctx context.Context, step, id, addr string) (*provision.Client, provision.Target, error) {
	defer s.waiting()()
	keys, err := s.consoleHostKeys(ctx, id)
	t := provision.Target{
		Addr:   net.JoinHostPort(addr, strconv.Itoa(s.Platform.SSHPort)),
		User:   s.opts.Config.Image.EffectiveSSHUser(),
		Signer: s.Signer,
	}
	switch {
	case err == nil:
		t.HostKey, t.HostKeyAlgorithms = keys.Check, keys.Algorithms()
		if id == s.InstanceID {
			s.HostKeys = keys
		}
	case errors.Is(err, provision.ErrNoHostKeys):
		s.warn(step, fmt.Sprintf("instance %s printed no SSH host keys on its console within %s: trusting the first key it shows", id, s.opts.Timeouts.Console))
		t.HostKey = provision.TrustOnFirstUse(func(host string, key ssh.PublicKey) {
			s.warn(step, fmt.Sprintf("trusted SSH host key %s of %s on first use", ssh.FingerprintSHA256(key), host))
		})
		if id == s.InstanceID {
			s.TOFU = true
		}
	default:
		return nil, t, err
	}
	s.dialBackoff(&t)
	attempts := 1
	t.Retrying = func(attempt int, err error, wait time.Duration) {
		attempts = attempt + 1
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: fmt.Sprintf("SSH to %s: attempt %d failed, retrying in %s", t.Addr, attempt, wait.Round(time.Millisecond))})
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Connect)
	defer cancel()
	began := time.Now()
	c, err := provision.Dial(dctx, t)
	s.timed(c)
	if err != nil {
		return nil, t, fmt.Errorf("connecting to instance %s at %s: %w", id, t.Addr, err)
	}
	s.record(TransSSH, id, began, attempts)
	return c, t, nil
}

// consoleHostKeys polls the console of id until it shows host keys, for at
// most Timeouts.Console; then it returns an error wrapping
// provision.ErrNoHostKeys.
func (s *State) consoleHostKeys(ctx context.Context, id string) (provision.HostKeys, error) {
	var keys provision.HostKeys
	pctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Console)
	defer cancel()
	// Latest (the console up to now, not only the boot's first 64 KiB) is
	// for Nitro instances only (preflight read the type's hypervisor); a
	// type of unknown hypervisor that answers UnsupportedOperation is
	// asked without.
	latest := s.ConsoleLatest
	err := s.pollSchedule(pctx, TransHostKeys, id, func() (bool, error) {
		in := &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)}
		if latest {
			in.Latest = aws.Bool(true)
		}
		out, err := s.opts.EC2.GetConsoleOutput(pctx, in)
		if latest && awserr.Code(err) == "UnsupportedOperation" {
			latest = false
			return false, nil
		}
		if awserr.NotFound(err) {
			return false, nil // a new instance, not visible to every API yet
		}
		if err != nil {
			if pctx.Err() != nil {
				return false, pctx.Err()
			}
			return false, fmt.Errorf("reading the console of instance %s: %w", id, err)
		}
		text, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
		if err != nil {
			return false, fmt.Errorf("decoding the console of instance %s: %w", id, err)
		}
		keys, err = provision.ParseHostKeys(s.Platform.HostKeys, text)
		return err == nil, nil
	})
	if err == nil {
		return keys, nil
	}
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return keys, fmt.Errorf("instance %s: %w", id, provision.ErrNoHostKeys)
	}
	return keys, err
}

func connect(ctx context.Context, s *State) error {
	c, t, err := s.dialInstance(ctx, StepConnect, s.InstanceID, s.InstanceAddr)
	if err != nil {
		return err
	}
	s.client, s.hostKey = c, t.HostKey
	s.targetAlgos = t.HostKeyAlgorithms
	return nil
}

// redial connects again to the builder, with the same pinned host key.
func (s *State) redial(ctx context.Context) (*provision.Client, error) {
	t := provision.Target{
		Addr: net.JoinHostPort(s.InstanceAddr, strconv.Itoa(s.Platform.SSHPort)), User: s.opts.Config.Image.EffectiveSSHUser(),
		Signer: s.Signer, HostKey: s.hostKey, HostKeyAlgorithms: s.targetAlgos,
	}
	s.dialBackoff(&t)
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Reboot)
	defer cancel()
	c, err := provision.Dial(dctx, t)
	return s.timed(c), err
}

func (s *State) closeClient() {
	if s.client != nil {
		_ = s.client.Close()
		s.client = nil
	}
}

func stop(ctx context.Context, s *State) error {
	if _, err := s.opts.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{s.InstanceID}}); err != nil {
		return fmt.Errorf("stopping instance %s: %w", s.InstanceID, err)
	}
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Stop)
	defer cancel()
	err := s.pollSchedule(wctx, TransStopped, s.InstanceID, func() (bool, error) {
		v, err := s.instanceState(wctx, s.InstanceID)
		if err != nil {
			return false, err
		}
		switch v.state {
		case types.InstanceStateNameStopped:
			return true, nil
		case types.InstanceStateNameStopping, types.InstanceStateNameRunning:
			return false, nil // running: the stop is not visible yet
		}
		return false, fmt.Errorf("instance is %s", v.state)
	})
	if err != nil {
		return fmt.Errorf("waiting for instance %s to stop: %w", s.InstanceID, err)
	}
	return nil
}
