package bake

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
)

// Step is one stage of the pipeline.
type Step struct {
	Name string
	Run  func(context.Context, *State) error
}

// Step names, in pipeline order.
const (
	StepPreflight     = "preflight"
	StepTempKey       = "temp-key"
	StepSecurityGroup = "security-group"
	StepLaunch        = "launch"
	StepWaitRunning   = "wait-running"
	StepConnect       = "connect"
	StepProvision     = "provision"
	StepVerifyConfig  = "verify-config"
	StepUpdates       = "updates-reboot"
	StepVerifyService = "verify-service"
	StepGeneralize    = "generalize"
	StepStop          = "stop"
	StepCreateImage   = "create-image"
	StepWaitImage     = "wait-image"
	StepVerifyImage   = "verify-image"
	StepManifest      = "manifest"
)

// Steps returns the pipeline, in order. This list is the product's order.
func Steps() []Step {
	return []Step{
		{StepPreflight, preflight},
		{StepTempKey, tempKey},
		{StepSecurityGroup, securityGroup},
		{StepLaunch, launch},
		{StepWaitRunning, waitRunning},
		{StepConnect, connect},
		{StepProvision, provisionWorker},
		{StepVerifyConfig, verifyConfig},
		{StepUpdates, updatesReboot},
		{StepVerifyService, verifyService},
		{StepGeneralize, generalize},
		{StepStop, stop},
		{StepCreateImage, createImage},
		{StepWaitImage, waitImage},
		{StepVerifyImage, verifyImage},
		{StepManifest, writeManifest},
	}
}

// Errors of preflight.
var (
	ErrNoBaseImage   = errors.New("no base image")
	ErrUnfitInstance = errors.New("instance type does not fit")
	ErrNoSSHCIDR     = errors.New("aws.ssh_cidr is not set")
	ErrPublicImage   = errors.New("the new image is public")
	ErrWorkerService = errors.New("worker service is not active")
)

// Minimums of the buildbot worker guide.
const (
	minVCPUs  = 2
	minMemMiB = 512
)

func (s *State) emit(e Event) {
	if s.opts.Events != nil {
		s.opts.Events.Event(e)
	}
}

func (s *State) warn(step, msg string) { s.emit(Event{Type: EventWarning, Step: step, Message: msg}) }

func (s *State) cmd(format string, a ...any) string {
	c := "aws ec2 " + fmt.Sprintf(format, a...)
	if s.Region != "" {
		c += " --region " + s.Region
	}
	return c
}

// apiCode returns the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// notFound reports whether err says the resource is already gone.
func notFound(err error) bool {
	c := apiCode(err)
	return strings.HasSuffix(c, ".NotFound")
}

// poll calls f every interval until it reports done, f fails or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

func preflight(ctx context.Context, s *State) error {
	cfg := s.opts.Config
	id, err := s.opts.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("checking AWS credentials (sts GetCallerIdentity): %w", err)
	}
	s.CallerARN = aws.ToString(id.Arn)
	s.labels.Creator = s.CallerARN

	cidr, err := sshCIDR(cfg.AWS.SSHCIDR, s.opts.Endpoint)
	if err != nil {
		return err
	}
	s.SSHCIDR = cidr

	// The previous AMI of this worker: the one the result replaces, and
	// the start of a refresh.
	prev, err := s.newestOwn(ctx)
	if err != nil {
		return err
	}
	if prev != nil {
		s.Replaces = aws.ToString(prev.ImageId)
	}
	var base *types.Image
	switch {
	case s.opts.FromPrevious:
		if prev == nil {
			return fmt.Errorf("%w: --from-previous, but no available AMI tagged %s=%s was made by latentworker", ErrNoBaseImage, fleet.TagWorker, cfg.Worker.Name)
		}
		base = prev
	case cfg.Image.BaseAMI != "":
		out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{cfg.Image.BaseAMI}})
		if err != nil {
			return fmt.Errorf("describing base image %s: %w", cfg.Image.BaseAMI, err)
		}
		if len(out.Images) == 0 {
			return fmt.Errorf("%w: %s does not exist in this region", ErrNoBaseImage, cfg.Image.BaseAMI)
		}
		base = &out.Images[0]
	default:
		owner, name := cfg.Image.EffectiveBase()
		out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
			Owners: []string{owner},
			Filters: []types.Filter{
				{Name: aws.String("name"), Values: []string{name}},
				{Name: aws.String("state"), Values: []string{"available"}},
			},
		})
		if err != nil {
			return fmt.Errorf("finding base image (owner %s, name %s): %w", owner, name, err)
		}
		base = newest(out.Images)
		if base == nil {
			return fmt.Errorf("%w: none owned by %s named %s", ErrNoBaseImage, owner, name)
		}
	}
	s.BaseAMI, s.BaseName = aws.ToString(base.ImageId), aws.ToString(base.Name)
	s.RootDevice = aws.ToString(base.RootDeviceName)
	if s.RootDevice == "" {
		s.RootDevice = "/dev/xvda"
	}
	s.labels.SourceAMI = s.BaseAMI
	s.labels.Replaces = s.Replaces

	it, err := s.opts.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(cfg.AWS.InstanceType)}})
	if err != nil {
		return fmt.Errorf("describing instance type %s: %w", cfg.AWS.InstanceType, err)
	}
	if len(it.InstanceTypes) == 0 {
		return fmt.Errorf("%w: %s is not offered in this region", ErrUnfitInstance, cfg.AWS.InstanceType)
	}
	ti := it.InstanceTypes[0]
	arch := string(base.Architecture)
	var archs []string
	ok := false
	if ti.ProcessorInfo != nil {
		for _, a := range ti.ProcessorInfo.SupportedArchitectures {
			archs = append(archs, string(a))
			ok = ok || string(a) == arch
		}
	}
	if !ok {
		return fmt.Errorf("%w: %s is %s, %s supports %v", ErrUnfitInstance, s.BaseAMI, arch, cfg.AWS.InstanceType, archs)
	}
	if ti.VCpuInfo == nil || aws.ToInt32(ti.VCpuInfo.DefaultVCpus) < minVCPUs {
		return fmt.Errorf("%w: %s has fewer than %d vCPUs", ErrUnfitInstance, cfg.AWS.InstanceType, minVCPUs)
	}
	if ti.MemoryInfo == nil || aws.ToInt64(ti.MemoryInfo.SizeInMiB) < minMemMiB {
		return fmt.Errorf("%w: %s has less than %d MiB of memory", ErrUnfitInstance, cfg.AWS.InstanceType, minMemMiB)
	}
	return nil
}

// sshCIDR is the configured CIDR, or 127.0.0.1/32 for a loopback endpoint.
func sshCIDR(configured, endpoint string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if endpoint != "" {
		if u, err := url.Parse(endpoint); err == nil {
			host := u.Hostname()
			if host == "localhost" {
				return "127.0.0.1/32", nil
			}
			if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
				return "127.0.0.1/32", nil
			}
		}
	}
	return "", fmt.Errorf("%w: set it to your public address as a /32 (e.g. 203.0.113.7/32); latentworker does not ask an internet service for it", ErrNoSSHCIDR)
}

// newest returns the image created last, or nil.
func newest(images []types.Image) *types.Image {
	if len(images) == 0 {
		return nil
	}
	sort.SliceStable(images, func(i, j int) bool {
		return aws.ToString(images[i].CreationDate) < aws.ToString(images[j].CreationDate)
	})
	return &images[len(images)-1]
}

// newestOwn returns the newest available AMI this tool baked for the worker.
func (s *State) newestOwn(ctx context.Context) (*types.Image, error) {
	w := s.opts.Config.Worker.Name
	out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + fleet.TagWorker), Values: []string{w}},
			{Name: aws.String("tag:" + fleet.TagRole), Values: []string{string(fleet.RoleImage)}},
			{Name: aws.String("state"), Values: []string{"available"}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("finding previous AMIs of worker %s: %w", w, err)
	}
	return newest(out.Images), nil
}

func tempKey(ctx context.Context, s *State) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the temporary key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return fmt.Errorf("temporary key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("temporary key: %w", err)
	}
	s.Signer = signer
	s.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	name := fleet.TempName(s.RunID)
	out, err := s.opts.EC2.ImportKeyPair(s.creating(ctx), &ec2.ImportKeyPairInput{
		KeyName:           aws.String(name),
		PublicKeyMaterial: []byte(s.PublicKey),
		TagSpecifications: []types.TagSpecification{s.labels.Spec(types.ResourceTypeKeyPair, fleet.RoleTempKey, name)},
	})
	if err != nil {
		return fmt.Errorf("importing key pair %s: %w", name, err)
	}
	s.KeyName, s.KeyPairID = name, aws.ToString(out.KeyPairId)
	s.undo.push(KindTemp, "key pair", name, s.cmd("delete-key-pair --key-name %s", name), func(ctx context.Context) error {
		_, err := s.opts.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)})
		if notFound(err) {
			return nil
		}
		return err
	})
	return nil
}

func securityGroup(ctx context.Context, s *State) error {
	name := fleet.TempName(s.RunID)
	in := &ec2.CreateSecurityGroupInput{
		GroupName:         aws.String(name),
		Description:       aws.String("latentworker bake " + s.RunID + ": SSH from " + s.SSHCIDR),
		TagSpecifications: []types.TagSpecification{s.labels.Spec(types.ResourceTypeSecurityGroup, fleet.RoleTempSG, name)},
	}
	if subnet := s.opts.Config.AWS.SubnetID; subnet != "" {
		out, err := s.opts.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{subnet}})
		if err != nil {
			return fmt.Errorf("describing subnet %s: %w", subnet, err)
		}
		if len(out.Subnets) == 0 {
			return fmt.Errorf("subnet %s not found", subnet)
		}
		in.VpcId = out.Subnets[0].VpcId
	}
	out, err := s.opts.EC2.CreateSecurityGroup(s.creating(ctx), in)
	if err != nil {
		return fmt.Errorf("creating security group %s: %w", name, err)
	}
	id := aws.ToString(out.GroupId)
	s.SecurityGroupID = id
	// The group lives as long as the builder: AWS refuses to delete a
	// group an instance (even a stopped one) still uses.
	s.undo.push(KindBuilder, "security group", id, s.cmd("delete-security-group --group-id %s", id), func(ctx context.Context) error {
		// The group may still be attached to an instance shutting down.
		return poll(ctx, s.opts.Timeouts.Poll, func() (bool, error) {
			_, err := s.opts.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			switch {
			case err == nil, notFound(err):
				return true, nil
			case apiCode(err) == "DependencyViolation":
				return false, nil
			}
			return false, err
		})
	})
	_, err = s.opts.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id),
		IpPermissions: []types.IpPermission{{
			IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			IpRanges: []types.IpRange{{CidrIp: aws.String(s.SSHCIDR), Description: aws.String("latentworker SSH")}},
		}},
	})
	if err != nil {
		return fmt.Errorf("allowing SSH from %s in security group %s: %w", s.SSHCIDR, id, err)
	}
	return nil
}

// runInstance launches one instance of role from ami and pushes its undo.
func (s *State) runInstance(ctx context.Context, ami string, role fleet.Role, kind Kind) (string, *undoItem, error) {
	cfg := s.opts.Config
	name := fleet.AMIName(cfg.Image.NamePrefix, cfg.Worker.Name, s.now()) + "-" + string(role)
	in := &ec2.RunInstancesInput{
		ImageId:          aws.String(ami),
		InstanceType:     types.InstanceType(cfg.AWS.InstanceType),
		KeyName:          aws.String(s.KeyName),
		SecurityGroupIds: []string{s.SecurityGroupID},
		MinCount:         aws.Int32(1),
		MaxCount:         aws.Int32(1),
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
	if cfg.AWS.SubnetID != "" {
		in.SubnetId = aws.String(cfg.AWS.SubnetID)
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
func (s *State) terminate(ctx context.Context, id string) error {
	_, err := s.opts.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if notFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	w := ec2.NewInstanceTerminatedWaiter(s.opts.EC2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, s.opts.Timeouts.Poll
	})
	defer s.waiting()()
	return w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, s.opts.Timeouts.Stop)
}

func (s *State) now() time.Time { return s.opts.Now() }

func launch(ctx context.Context, s *State) error {
	id, it, err := s.runInstance(ctx, s.BaseAMI, fleet.RoleBuilder, KindBuilder)
	if err != nil {
		return err
	}
	s.InstanceID, s.builder = id, it
	return nil
}

// waitInstance waits until id runs and returns its public address.
func (s *State) waitInstance(ctx context.Context, id string) (string, error) {
	w := ec2.NewInstanceRunningWaiter(s.opts.EC2, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, s.opts.Timeouts.Poll
	})
	defer s.waiting()()
	out, err := w.WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, s.opts.Timeouts.Running)
	if err != nil {
		return "", fmt.Errorf("waiting for instance %s to run: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if addr := aws.ToString(in.PublicIpAddress); addr != "" {
				return addr, nil
			}
		}
	}
	return "", fmt.Errorf("instance %s runs but has no public IP address (is the subnet's auto-assign public IP off?)", id)
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
		Addr:   net.JoinHostPort(addr, "22"),
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
	t.Retrying = func(attempt int, err error, wait time.Duration) {
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: fmt.Sprintf("SSH to %s: attempt %d failed, retrying in %s", t.Addr, attempt, wait.Round(time.Millisecond))})
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Connect)
	defer cancel()
	c, err := provision.Dial(dctx, t)
	s.timed(c)
	if err != nil {
		return nil, t, fmt.Errorf("connecting to instance %s at %s: %w", id, t.Addr, err)
	}
	return c, t, nil
}

// consoleHostKeys polls the console of id until it shows host keys, for at
// most Timeouts.Console; then it returns an error wrapping
// provision.ErrNoHostKeys.
func (s *State) consoleHostKeys(ctx context.Context, id string) (provision.HostKeys, error) {
	var keys provision.HostKeys
	pctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Console)
	defer cancel()
	err := poll(pctx, min(s.opts.Timeouts.Poll, 2*time.Second), func() (bool, error) {
		out, err := s.opts.EC2.GetConsoleOutput(pctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id), Latest: aws.Bool(true)})
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
		keys, err = provision.ParseConsoleHostKeys(text)
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
		Addr: net.JoinHostPort(s.InstanceAddr, "22"), User: s.opts.Config.Image.EffectiveSSHUser(),
		Signer: s.Signer, HostKey: s.hostKey, HostKeyAlgorithms: s.targetAlgos,
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Reboot)
	defer cancel()
	c, err := provision.Dial(dctx, t)
	return s.timed(c), err
}

// driver returns the platform's driver, reporting script output as progress.
func (s *State) driver(step string) *provision.Driver {
	return &provision.Driver{Platform: s.opts.Config.Image.Platform, Progress: lineWriter(func(line string) {
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: line})
	})}
}

type lineWriter func(string)

func (f lineWriter) Write(p []byte) (int, error) {
	f(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func provisionWorker(ctx context.Context, s *State) error {
	out, err := s.client.Output(ctx, "cat /etc/os-release", nil)
	if err != nil {
		return fmt.Errorf("reading /etc/os-release on instance %s: %w", s.InstanceID, err)
	}
	s.OSName = prettyName(out)
	s.Worker = s.opts.Config.ScriptWorker(s.OSName)
	d := s.driver(StepProvision)
	if err := d.Setup(ctx, s.client, s.Worker, s.opts.Password.Reveal()); err != nil {
		return fmt.Errorf("setting up worker %s on instance %s: %w", s.Worker.Name, s.InstanceID, err)
	}
	if s.opts.Config.Image.CPythonBuildDeps {
		if err := d.BuildDeps(ctx, s.client); err != nil {
			return fmt.Errorf("installing CPython build dependencies on instance %s: %w", s.InstanceID, err)
		}
	}
	for _, path := range s.opts.Config.Image.ExtraScripts {
		content, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("extra script: %w", err)
		}
		if err := d.RunScript(ctx, s.client, filepath.Base(path), content); err != nil {
			return fmt.Errorf("extra script %s on instance %s: %w", path, s.InstanceID, err)
		}
	}
	return nil
}

// prettyName returns PRETTY_NAME of an os-release file.
func prettyName(osRelease []byte) string {
	for _, line := range strings.Split(string(osRelease), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

func verifyConfig(ctx context.Context, s *State) error {
	if _, err := s.driver(StepVerifyConfig).Verify(ctx, s.client, s.Worker, s.opts.Password.Reveal()); err != nil {
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, s.InstanceID, err)
	}
	return nil
}

func updatesReboot(ctx context.Context, s *State) error {
	d := s.driver(StepUpdates)
	if err := d.Updates(ctx, s.client); err != nil {
		return fmt.Errorf("applying updates on instance %s: %w", s.InstanceID, err)
	}
	max := s.opts.MaxReboots
	for n := 1; ; n++ {
		s.emit(Event{Type: EventProgress, Step: StepUpdates, Percent: -1, Message: fmt.Sprintf("reboot %d of instance %s", n, s.InstanceID)})
		done := s.waiting()
		c, err := provision.Reboot(ctx, s.client, s.redial)
		done()
		s.client = c
		if err != nil {
			return fmt.Errorf("rebooting instance %s: %w", s.InstanceID, err)
		}
		pending, err := d.RebootRequired(ctx, s.client)
		if err != nil {
			return fmt.Errorf("checking for a pending reboot on instance %s: %w", s.InstanceID, err)
		}
		if !pending {
			return nil
		}
		if n >= max {
			return fmt.Errorf("instance %s still asks for a reboot after %d reboots", s.InstanceID, n)
		}
	}
}

// verifyUp waits, bounded by Timeouts.Verify, until the worker's service
// has come up on its own on the machine *c is connected to
// (scripts.Facts.ServiceUp: active, or refused by the master after it
// connected), then checks the worker's whole configuration there. A
// connection that drops meanwhile (a young boot) is made again with redial,
// and *c is then the new client (nil if the last attempt failed).
func (s *State) verifyUp(ctx context.Context, step string, c **provision.Client, redial func(context.Context) (*provision.Client, error), id string) error {
	unit := "buildbot-worker@" + s.opts.Config.Worker.Name + ".service"
	d := s.driver(step)
	vctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Verify)
	defer cancel()
	var checkErr, lastErr error
	why := ""
	err := poll(vctx, min(s.opts.Timeouts.Poll, 2*time.Second), func() (bool, error) {
		if *c == nil {
			nc, err := redial(vctx)
			if err != nil {
				lastErr = err
				return false, nil
			}
			*c = nc
		}
		facts, err := d.Verify(vctx, *c, s.Worker, s.opts.Password.Reveal())
		var mismatch *scripts.MismatchError
		var exit *provision.ExitError
		switch {
		case err == nil || errors.As(err, &mismatch):
			var up bool
			up, why = facts.ServiceUp()
			checkErr, lastErr = err, nil
			return up, nil
		case errors.As(err, &exit):
			return false, err // the script itself failed: no use waiting
		default:
			// The connection is gone.
			lastErr = err
			_ = (*c).Close()
			*c = nil
			return false, nil
		}
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return err
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, id, err)
	case err != nil && why == "":
		return fmt.Errorf("%w: %s on instance %s: no answer after %s: %w", ErrWorkerService, unit, id, s.opts.Timeouts.Verify, lastErr)
	case err != nil:
		return fmt.Errorf("%w: %s on instance %s is %s after %s", ErrWorkerService, unit, id, why, s.opts.Timeouts.Verify)
	}
	if why == scripts.RefusedByMaster {
		s.emit(Event{Type: EventProgress, Step: step, Percent: -1, Message: fmt.Sprintf("worker %s on instance %s %s", s.Worker.Name, id, why)})
	}
	if checkErr != nil {
		return fmt.Errorf("verifying worker %s on instance %s: %w", s.Worker.Name, id, checkErr)
	}
	return nil
}

func verifyService(ctx context.Context, s *State) error {
	return s.verifyUp(ctx, StepVerifyService, &s.client, s.redial, s.InstanceID)
}

func generalize(ctx context.Context, s *State) error {
	if err := s.driver(StepGeneralize).Generalize(ctx, s.client, s.PublicKey); err != nil {
		return fmt.Errorf("generalizing instance %s: %w", s.InstanceID, err)
	}
	s.closeClient()
	return nil
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
	w := ec2.NewInstanceStoppedWaiter(s.opts.EC2, func(o *ec2.InstanceStoppedWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, s.opts.Timeouts.Poll
	})
	defer s.waiting()()
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{s.InstanceID}}, s.opts.Timeouts.Stop); err != nil {
		return fmt.Errorf("waiting for instance %s to stop: %w", s.InstanceID, err)
	}
	return nil
}

func createImage(ctx context.Context, s *State) error {
	cfg := s.opts.Config
	s.ImageName = fleet.AMIName(cfg.Image.NamePrefix, cfg.Worker.Name, s.now())
	desc := fmt.Sprintf("buildbot latent worker %s (master %s), baked by latentworker run %s from %s", cfg.Worker.Name, cfg.Worker.Master, s.RunID, s.BaseAMI)
	out, err := s.opts.EC2.CreateImage(s.creating(ctx), &ec2.CreateImageInput{
		InstanceId:  aws.String(s.InstanceID),
		Name:        aws.String(s.ImageName),
		Description: aws.String(desc),
		TagSpecifications: []types.TagSpecification{
			s.labels.Spec(types.ResourceTypeImage, fleet.RoleImage, s.ImageName),
			s.labels.Spec(types.ResourceTypeSnapshot, fleet.RoleSnapshot, s.ImageName),
		},
	})
	if err != nil {
		return fmt.Errorf("creating image %s from instance %s: %w", s.ImageName, s.InstanceID, err)
	}
	id := aws.ToString(out.ImageId)
	s.ImageID = id
	s.undo.push(KindImage, "image", id, s.cmd("deregister-image --image-id %s", id)+" (then delete its snapshots: "+s.cmd("describe-snapshots --filters Name=tag:%s,Values=%s", fleet.TagRunID, s.RunID)+")", func(ctx context.Context) error {
		return s.deleteImage(ctx, id)
	})
	return nil
}

// deleteImage deregisters image id and deletes its snapshots: those the run
// saw, those the image names and those tagged with the run ID.
func (s *State) deleteImage(ctx context.Context, id string) error {
	snaps := map[string]bool{}
	for _, sn := range s.SnapshotIDs {
		snaps[sn] = true
	}
	if out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}); err == nil {
		for _, im := range out.Images {
			for _, sn := range imageSnapshots(im) {
				snaps[sn] = true
			}
		}
	}
	_, err := s.opts.EC2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)})
	if err != nil && !notFound(err) {
		return fmt.Errorf("deregistering image %s: %w", id, err)
	}
	if out, err := s.opts.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"}, Filters: []types.Filter{fleet.RunFilter(s.RunID)},
	}); err == nil {
		for _, sn := range out.Snapshots {
			snaps[aws.ToString(sn.SnapshotId)] = true
		}
	}
	var errs []error
	for sn := range snaps {
		_, err := s.opts.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sn)})
		if err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("deleting snapshot %s (%s): %w", sn, s.cmd("delete-snapshot --snapshot-id %s", sn), err))
		}
	}
	return errors.Join(errs...)
}

func imageSnapshots(im types.Image) []string {
	var ids []string
	for _, bd := range im.BlockDeviceMappings {
		if bd.Ebs != nil && aws.ToString(bd.Ebs.SnapshotId) != "" {
			ids = append(ids, aws.ToString(bd.Ebs.SnapshotId))
		}
	}
	return ids
}

func waitImage(ctx context.Context, s *State) error {
	defer s.waiting()()
	wctx, cancel := context.WithTimeout(ctx, s.opts.Timeouts.Image)
	defer cancel()
	last := -2
	err := poll(wctx, s.opts.Timeouts.Poll, func() (bool, error) {
		out, err := s.opts.EC2.DescribeImages(wctx, &ec2.DescribeImagesInput{ImageIds: []string{s.ImageID}})
		if err != nil {
			return false, fmt.Errorf("describing image %s: %w", s.ImageID, err)
		}
		if len(out.Images) == 0 {
			return false, nil // not visible yet
		}
		im := out.Images[0]
		if aws.ToBool(im.Public) {
			return false, fmt.Errorf("%w: %s; make it private (%s) before anything else", ErrPublicImage, s.ImageID, s.cmd("modify-image-attribute --image-id %s --launch-permission Remove=[{Group=all}]", s.ImageID))
		}
		if sn := imageSnapshots(im); len(sn) > 0 {
			s.SnapshotIDs = sn
		}
		switch im.State {
		case types.ImageStateAvailable:
			s.emit(Event{Type: EventProgress, Step: StepWaitImage, Percent: 100, Message: "image " + s.ImageID + " is available"})
			return true, nil
		case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
			reason := ""
			if im.StateReason != nil {
				reason = ": " + aws.ToString(im.StateReason.Message)
			}
			return false, fmt.Errorf("image %s is %s%s", s.ImageID, im.State, reason)
		}
		pct := -1
		if len(s.SnapshotIDs) > 0 {
			so, err := s.opts.EC2.DescribeSnapshots(wctx, &ec2.DescribeSnapshotsInput{SnapshotIds: s.SnapshotIDs})
			if err == nil && len(so.Snapshots) > 0 {
				sum := 0
				for _, sn := range so.Snapshots {
					p, _ := strconv.Atoi(strings.TrimSuffix(aws.ToString(sn.Progress), "%"))
					sum += p
				}
				pct = sum / len(so.Snapshots)
			}
		}
		if pct != last {
			last = pct
			s.emit(Event{Type: EventProgress, Step: StepWaitImage, Percent: pct, Message: fmt.Sprintf("image %s is %s", s.ImageID, im.State)})
		}
		return false, nil
	})
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("image %s not available after %s: %w", s.ImageID, s.opts.Timeouts.Image, err)
	}
	return err
}

func verifyImage(ctx context.Context, s *State) error {
	if s.opts.NoVerify {
		s.warn(StepVerifyImage, "skipped (--no-verify): the new image was not booted")
		return nil
	}
	id, it, err := s.runInstance(ctx, s.ImageID, fleet.RoleVerify, KindTemp)
	if err != nil {
		return err
	}
	addr, err := s.waitInstance(ctx, id)
	if err != nil {
		return err
	}
	c, t, err := s.dialInstance(ctx, StepVerifyImage, id, addr)
	if err != nil {
		return err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	redial := func(ctx context.Context) (*provision.Client, error) {
		nc, err := provision.Dial(ctx, t)
		return s.timed(nc), err
	}
	if err := s.verifyUp(ctx, StepVerifyImage, &c, redial, id); err != nil {
		return fmt.Errorf("instance booted from %s: %w", s.ImageID, err)
	}
	_ = c.Close()
	c = nil
	if err := s.undo.runNow(ctx, it); err != nil {
		return fmt.Errorf("terminating verification instance %s: %w", id, err)
	}
	return nil
}

var _ io.Writer = lineWriter(nil)

// creating returns the context for a call that creates a resource: detached
// from cancellation and bounded, so that a Ctrl-C during the call still lets
// the ID come back and its undo be pushed (a cancelled request may have been
// carried out all the same). The step checks ctx again after pushing.
func (s *State) creating(ctx context.Context) context.Context {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeouts.Create)
	s.createCancels = append(s.createCancels, cancel)
	return c
}

// waiting starts counting time spent waiting for EC2; call the result to
// stop.
func (s *State) waiting() func() {
	start, remote := time.Now(), s.RemoteTime
	return func() { s.WaitTime += time.Since(start) - (s.RemoteTime - remote) }
}

// timed makes c report its commands' time to the run.
func (s *State) timed(c *provision.Client) *provision.Client {
	if c != nil {
		c.OnCommand = func(d time.Duration) { s.RemoteTime += d }
	}
	return c
}
