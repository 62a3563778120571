package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/latentworker/latentworker/lab/ec2front"
	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/machine"
)

// fleet is the front's Backend: it maps EC2 instance and image IDs onto
// machines and layers. Its own calls to moto (key lookups, snapshot tags,
// settling states) go straight to moto, not through the front.
type fleet struct {
	stateDir     string
	cacheDir     string          // where base images are cached
	ctx          context.Context // the lab's life: base builds end with it
	ec2          *ec2.Client
	kms          *kms.Client // moto's KMS: the keys encrypted volumes name
	imagePending time.Duration
	aptProxy     string // the lab's apt cache, "" for none
	pipIndex     string // the lab's PyPI mirror, "" for none
	logf         func(format string, args ...any)

	mu        sync.Mutex
	images    map[string]*labImage
	instances map[string]*labInstance
	addrs     *addrPool
	builds    map[string]*baseBuild // release -> its base, built on first launch
	layerSeq  int
	wg        sync.WaitGroup
	// transitions records every state change as it happens.
	transitions *transitionLog
}

type labImage struct {
	id          string
	region      string   // "" for catalogue images: every region
	release     string   // catalogue images: the recipe whose base they boot
	layers      []string // captured images: own layer first, base last
	own         string   // the layer this image added ("" for catalogue images)
	user        string
	bootable    bool
	state       string // pending, available, failed; "" = moto's
	created     time.Time
	ready       time.Time // when a pending image becomes available at the earliest
	deprecation time.Time
	protection  string
	snapshots   []string
	gone        bool // deregistered (in its region)
	// encrypted: its snapshots are encrypted, with kmsKey ("" the
	// region's default EBS key).
	encrypted bool
	kmsKey    string
}

type labInstance struct {
	id, region, imageID string
	layers              []string
	addr                netip.Addr
	encrypted           bool // its root volume
	kmsKey              string
	m                   *machine.Machine
}

// baseBuild is a base image being built for launches that wait for it.
type baseBuild struct {
	done   chan struct{} // closed when the build ended
	rootfs string
	err    error
}

func newFleet(ctx context.Context, stateDir, cacheDir string, client *ec2.Client, kmsClient *kms.Client, cfg Config, logf func(string, ...any)) (*fleet, error) {
	pool, err := newAddrPool(cfg.Addresses)
	if err != nil {
		return nil, err
	}
	f := &fleet{
		stateDir: stateDir, cacheDir: cacheDir, ctx: ctx, ec2: client, kms: kmsClient, imagePending: cfg.ImagePending.Duration, logf: logf,
		images: map[string]*labImage{}, instances: map[string]*labInstance{}, addrs: pool,
		builds: map[string]*baseBuild{},
	}
	for _, e := range catalogue() {
		f.images[e.ID] = &labImage{
			id: e.ID, release: e.Release, user: e.User, bootable: e.Bootable,
			created: e.Created,
		}
	}
	return f, nil
}

// base returns the base rootfs of a release, waiting until ctx ends for
// the build that the first launch of one of its images started. Builds
// run once per lab (and once per cache: image.EnsureBase locks) and
// outlive the launch that started them; a failed build is tried again by
// the next launch.
func (f *fleet) base(ctx context.Context, release string) (string, error) {
	f.mu.Lock()
	b := f.builds[release]
	if b != nil {
		select {
		case <-b.done:
			if b.err != nil {
				b = nil
			}
		default:
		}
	}
	if b == nil {
		b = &baseBuild{done: make(chan struct{})}
		f.builds[release] = b
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(b.done)
			start := time.Now()
			b.rootfs, b.err = image.EnsureBase(f.ctx, f.cacheDir, release, logWriter(f.logf))
			if b.err != nil {
				f.logf("base image %s: %v", release, b.err)
				return
			}
			f.logf("base image %s: ready after %.0fs", release, time.Since(start).Seconds())
		}()
	}
	f.mu.Unlock()
	select {
	case <-b.done:
		return b.rootfs, b.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// logWriter turns the lines written to it into log lines.
type logWriter func(string, ...any)

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w("%s", strings.TrimPrefix(line, "latentlab: "))
	}
	return len(p), nil
}

func inRegion(region string) func(*ec2.Options) {
	return func(o *ec2.Options) {
		if region != "" {
			o.Region = region
		}
	}
}

func notFound(id string) error {
	return &ec2front.APIError{Code: "InvalidAMIID.NotFound", Message: fmt.Sprintf("The image id '[%s]' does not exist", id)}
}

// image finds a live image visible in region.
func (f *fleet) image(region, id string) (*labImage, bool) {
	img, ok := f.images[id]
	if !ok || img.gone || (img.region != "" && region != "" && img.region != region) {
		return nil, false
	}
	return img, true
}

func (f *fleet) CheckLaunch(region, imageID string) error {
	f.mu.Lock()
	img, ok := f.image(region, imageID)
	f.mu.Unlock()
	switch {
	case !ok:
		return notFound(imageID)
	case !img.bootable:
		return &ec2front.APIError{Code: "InvalidAMIID.Unavailable",
			Message: fmt.Sprintf("lab: image %s has no root filesystem the lab can boot (its architecture is not x86_64, or it was not made by CreateImage)", imageID)}
	case img.state == "pending":
		return &ec2front.APIError{Code: "InvalidAMIID.Unavailable", Message: fmt.Sprintf("Image %s is not available: it is pending", imageID)}
	case img.state == "failed":
		return &ec2front.APIError{Code: "InvalidAMIID.Unavailable", Message: fmt.Sprintf("Image %s failed", imageID)}
	}
	return nil
}

func (f *fleet) Launch(ctx context.Context, spec ec2front.LaunchSpec) (ec2front.InstanceView, error) {
	f.mu.Lock()
	img, ok := f.image(spec.Region, spec.ImageID)
	f.mu.Unlock()
	if !ok || !img.bootable {
		f.abandon(spec)
		return ec2front.InstanceView{}, notFound(spec.ImageID)
	}
	authKey := ""
	if spec.KeyName != "" {
		out, err := f.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{
			KeyNames: []string{spec.KeyName}, IncludePublicKey: aws.Bool(true),
		}, inRegion(spec.Region))
		if err != nil || len(out.KeyPairs) == 0 {
			f.abandon(spec)
			return ec2front.InstanceView{}, &ec2front.APIError{Code: "InvalidKeyPair.NotFound", Message: fmt.Sprintf("The key pair '%s' does not exist", spec.KeyName)}
		}
		authKey = aws.ToString(out.KeyPairs[0].PublicKey)
	}
	addr, err := f.addrs.take()
	if err != nil {
		f.abandon(spec)
		return ec2front.InstanceView{}, &ec2front.APIError{Code: "InsufficientInstanceCapacity", Message: "lab: " + err.Error()}
	}
	inst := &labInstance{id: spec.InstanceID, region: spec.Region, imageID: spec.ImageID, layers: img.layers, addr: addr,
		encrypted: spec.Encrypted || img.encrypted, kmsKey: spec.KMSKeyID}
	if inst.kmsKey == "" && !spec.Encrypted {
		inst.kmsKey = img.kmsKey // a volume from an encrypted snapshot keeps its key
	}
	layers := img.layers
	var waitBase func(context.Context) (string, error)
	if img.release != "" {
		if rootfs, ok := image.Built(f.cacheDir, img.release); ok {
			layers = []string{rootfs}
		} else {
			f.logf("instance %s: the %s base image is not built yet: building it now; the instance stays pending meanwhile", spec.InstanceID, img.release)
			release := img.release
			waitBase = func(ctx context.Context) (string, error) { return f.base(ctx, release) }
		}
	}
	inst.m = machine.New(machine.Spec{
		ID:     spec.InstanceID,
		Name:   MachineName(spec.InstanceID),
		Dir:    filepath.Join(f.stateDir, "i", spec.InstanceID),
		Layers: layers,
		Base:   waitBase,
		OnBaseFailure: func(err error) {
			f.logf("instance %s: cannot boot (%v): terminating it", spec.InstanceID, err)
			f.abandon(spec)
			_ = f.Terminate(spec.InstanceID)
		},
		Addr:     addr,
		User:     img.user,
		AuthKey:  authKey,
		AptProxy: f.aptProxy,
		PipIndex: f.pipIndex,
		Hostname: "ip-" + strings.ReplaceAll(addr.String(), ".", "-"),
		OnEvent: func(event string) {
			f.transitions.add(spec.InstanceID, event, time.Now())
		},
		OnGuestPoweroff: func() {
			// The guest powered itself off: tell moto, as EC2 would show.
			_, err := f.ec2.StopInstances(context.Background(), &ec2.StopInstancesInput{InstanceIds: []string{spec.InstanceID}}, inRegion(spec.Region))
			if err != nil {
				f.logf("instance %s: guest poweroff: moto StopInstances: %v", spec.InstanceID, err)
			}
		},
	})
	f.mu.Lock()
	f.instances[spec.InstanceID] = inst
	f.mu.Unlock()
	if err := inst.m.Start(); err != nil {
		f.logf("instance %s: boot: %v", spec.InstanceID, err)
		f.Terminate(spec.InstanceID)
		return ec2front.InstanceView{}, &ec2front.APIError{Code: "InsufficientInstanceCapacity", Message: "lab: cannot boot: " + err.Error()}
	}
	f.logf("instance %s: booting from %s at %s", spec.InstanceID, spec.ImageID, addr)
	return f.view(inst), nil
}

// abandon terminates in moto an instance the lab could not give a body.
func (f *fleet) abandon(spec ec2front.LaunchSpec) {
	_, _ = f.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{spec.InstanceID}}, inRegion(spec.Region))
}

// MachineName is the machine name (for nspawn and the machine's cgroups) of
// an instance: short, unique.
func MachineName(instanceID string) string {
	return "lw-" + strings.TrimPrefix(instanceID, "i-")
}

func (f *fleet) view(inst *labInstance) ec2front.InstanceView {
	return ec2front.InstanceView{State: string(inst.m.State()), Addr: inst.addr.String()}
}

func (f *fleet) instance(id string) (*labInstance, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[id]
	return inst, ok
}

func (f *fleet) Instance(id string) (ec2front.InstanceView, bool) {
	inst, ok := f.instance(id)
	if !ok {
		return ec2front.InstanceView{}, false
	}
	return f.view(inst), true
}

func incorrectState(id string, s machine.State, what string) error {
	return &ec2front.APIError{Code: "IncorrectInstanceState",
		Message: fmt.Sprintf("The instance '%s' is not in a state from which it can be %s (it is %s).", id, what, s)}
}

func (f *fleet) Stop(id string, force bool) error {
	inst, _ := f.instance(id)
	switch s := inst.m.State(); s {
	case machine.Stopped, machine.Stopping:
		return nil
	case machine.Pending, machine.Running:
	default:
		return incorrectState(id, s, "stopped")
	}
	timeout := 90 * time.Second
	if force {
		timeout = 5 * time.Second
	}
	f.background(inst.m.StopAsync(timeout), "stop "+id)
	return nil
}

func (f *fleet) Start(id string) error {
	inst, _ := f.instance(id)
	switch s := inst.m.State(); s {
	case machine.Pending, machine.Running:
		return nil
	case machine.Stopped:
	default:
		return incorrectState(id, s, "started")
	}
	return inst.m.Start()
}

func (f *fleet) Reboot(id string) error {
	inst, _ := f.instance(id)
	return inst.m.Reboot()
}

func (f *fleet) Terminate(id string) error {
	inst, ok := f.instance(id)
	if !ok {
		return nil
	}
	done := inst.m.TerminateAsync()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := <-done; err != nil {
			f.logf("terminate %s: %v", id, err)
		}
		f.addrs.give(inst.addr)
		f.gcLayers()
	}()
	return nil
}

func (f *fleet) background(ch <-chan error, what string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := <-ch; err != nil {
			f.logf("%s: %v", what, err)
		}
	}()
}

func (f *fleet) Console(id string) ([]byte, bool) {
	inst, ok := f.instance(id)
	if !ok {
		return nil, false
	}
	if inst.m.State() == machine.Terminated {
		return nil, true
	}
	b, err := os.ReadFile(inst.m.ConsolePath())
	if err != nil {
		return nil, true
	}
	return b, true
}

func (f *fleet) CreateImage(ctx context.Context, region, instanceID, imageID string, noReboot bool, snapTags map[string]string) error {
	inst, _ := f.instance(instanceID)
	state := inst.m.State()
	release, held := inst.m.Hold()
	if !held || state != machine.Running && state != machine.Stopped {
		if held {
			release()
		}
		_, _ = f.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(imageID)}, inRegion(region))
		return incorrectState(instanceID, state, "imaged")
	}
	layers, complete := inst.m.Layers()
	if !complete {
		release()
		_, _ = f.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(imageID)}, inRegion(region))
		return incorrectState(instanceID, machine.Pending, "imaged")
	}
	f.mu.Lock()
	src := f.images[inst.imageID]
	user := ""
	if src != nil {
		user = src.user
	}
	f.layerSeq++
	layer := filepath.Join(f.stateDir, "l", fmt.Sprint(f.layerSeq))
	now := time.Now()
	img := &labImage{id: imageID, region: region, own: layer, user: user, bootable: true,
		state: "pending", created: now, ready: now.Add(f.imagePending), encrypted: inst.encrypted, kmsKey: inst.kmsKey}
	f.images[imageID] = img
	f.mu.Unlock()

	// Snapshot tags, as AWS applies them at creation.
	_ = f.recordSnapshots(ctx, region, img, nil, snapTags)

	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		// The image is captured even if the instance is terminated
		// meanwhile: Terminate waits for the copy.
		err := f.capture(inst, layer, state == machine.Running && !noReboot)
		release()
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.logf("image %s: capture from %s failed: %v", imageID, instanceID, err)
			img.state = "failed"
			return
		}
		img.layers = append([]string{layer}, layers...)
		f.logf("image %s: captured from %s", imageID, instanceID)
		// Available now, or when the configured pending time ends.
		at := time.Now()
		if at.Before(img.ready) {
			at = img.ready
		}
		f.transitions.add(imageID, "available", at)
	}()
	return nil
}

// CheckKey checks that a KMS key exists in region and is enabled, as EC2
// does before it encrypts a volume with it.
func (f *fleet) CheckKey(ctx context.Context, region, key string) (string, error) {
	out, err := f.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)}, func(o *kms.Options) { o.Region = region })
	if err != nil {
		return "", &ec2front.APIError{Code: "InvalidParameterValue", Message: fmt.Sprintf("Invalid KMS key %s: it does not exist in %s (%v)", key, region, err)}
	}
	if st := out.KeyMetadata.KeyState; st != kmstypes.KeyStateEnabled {
		return "", &ec2front.APIError{Code: "IncorrectState", Message: fmt.Sprintf("The KMS key %s is %s, not Enabled", key, st)}
	}
	return aws.ToString(out.KeyMetadata.Arn), nil
}

// CheckCopy checks that an image can be copied now: it exists in region
// and is available.
func (f *fleet) CheckCopy(region, imageID string) error {
	f.mu.Lock()
	img, ok := f.image(region, imageID)
	var state string
	if ok {
		state = f.imageView(img).State
	}
	f.mu.Unlock()
	switch {
	case !ok || img.region == "":
		return nil // moto's (or a catalogue image): moto answers
	case state != "available":
		return &ec2front.APIError{Code: "IncorrectState", Message: fmt.Sprintf("Image %s in %s is %s: only an available image can be copied", imageID, region, state)}
	}
	return nil
}

// CopyImage makes the copy moto registered bootable in its region: it
// shares the source's layers (never changed), is pending for the lab's
// image_pending as a new image is, is encrypted as asked or as its source
// is, and carries the tags asked for at creation.
func (f *fleet) CopyImage(ctx context.Context, spec ec2front.CopySpec) error {
	f.mu.Lock()
	src, ok := f.image(spec.SourceRegion, spec.SourceImageID)
	now := time.Now()
	img := &labImage{id: spec.ImageID, region: spec.Region, state: "pending", created: now, ready: now.Add(f.imagePending)}
	if ok {
		img.layers, img.user, img.bootable, img.release = src.layers, src.user, src.bootable, src.release
		img.encrypted = src.encrypted
	}
	if spec.Encrypted {
		img.encrypted, img.kmsKey = true, spec.KMSKeyID
	}
	if img.layers == nil && img.release == "" {
		img.state = "" // nothing to boot: moto's state
	}
	f.images[spec.ImageID] = img
	f.mu.Unlock()

	if err := f.recordSnapshots(ctx, spec.Region, img, spec.ImageTags, spec.SnapshotTags); err != nil {
		return fmt.Errorf("lab: copy %s in %s: %w", spec.ImageID, spec.Region, err)
	}
	f.logf("image %s: copy of %s (%s) in %s, encrypted %v", spec.ImageID, spec.SourceImageID, spec.SourceRegion, spec.Region, img.encrypted)
	return nil
}

// recordSnapshots records the snapshots moto made for a new image and tags
// the image and its snapshots as asked at creation, as AWS does.
func (f *fleet) recordSnapshots(ctx context.Context, region string, img *labImage, imageTags, snapTags map[string]string) error {
	out, err := f.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.id}}, inRegion(region))
	if err != nil || len(out.Images) != 1 {
		return fmt.Errorf("describing image %s: %v", img.id, err)
	}
	var snaps []string
	for _, bdm := range out.Images[0].BlockDeviceMappings {
		if bdm.Ebs != nil && bdm.Ebs.SnapshotId != nil {
			snaps = append(snaps, *bdm.Ebs.SnapshotId)
		}
	}
	f.mu.Lock()
	img.snapshots = snaps
	f.mu.Unlock()
	tag := func(ids []string, m map[string]string) {
		if len(ids) == 0 || len(m) == 0 {
			return
		}
		var tags []ec2types.Tag
		for k, v := range m {
			tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		if _, err := f.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: tags}, inRegion(region)); err != nil {
			f.logf("image %s: tags: %v", img.id, err)
		}
	}
	tag([]string{img.id}, imageTags)
	tag(snaps, snapTags)
	return nil
}

// capture makes layer the instance's disk as it is now; with reboot, it
// stops the instance first and starts it again afterwards, as CreateImage
// does without NoReboot.
//
// A stopped instance's own layer is not copied: it becomes the image's layer
// and a lower layer of the instance (machine.Rebase), at no cost, as an EBS
// snapshot shares its volume's blocks. A running one's (NoReboot) is copied.
func (f *fleet) capture(inst *labInstance, layer string, reboot bool) error {
	ctx := context.Background()
	if reboot {
		if err := <-inst.m.StopAsync(90 * time.Second); err != nil {
			return err
		}
	}
	err := inst.m.Rebase(layer, image.Scrubbed(inst.m.UpperDir()))
	f.mu.Lock()
	inst.layers, _ = inst.m.Layers() // the layer collector must keep the instance's
	f.mu.Unlock()
	switch {
	case err == nil:
		err = image.Scrub(layer)
	case errors.Is(err, machine.ErrNotStopped):
		err = image.Capture(ctx, inst.m.UpperDir(), layer)
	}
	if reboot {
		// Unless the instance is being terminated meanwhile.
		if serr := inst.m.Start(); serr != nil {
			if s := inst.m.State(); s != machine.ShuttingDown && s != machine.Terminated {
				err = errors.Join(err, serr)
			}
		}
	}
	return err
}

func (f *fleet) imageView(img *labImage) ec2front.ImageView {
	v := ec2front.ImageView{State: img.state, CreationDate: img.created, DeprecationTime: img.deprecation, Protection: img.protection,
		Encrypted: img.encrypted, KMSKeyID: img.kmsKey}
	if img.state == "pending" {
		if img.layers != nil && !time.Now().Before(img.ready) {
			img.state = "available"
			v.State = "available"
		} else {
			total := img.ready.Sub(img.created)
			done := time.Since(img.created)
			v.SnapshotProgress = 99
			if total > 0 && done < total {
				v.SnapshotProgress = int(99 * done / total)
			}
		}
	}
	return v
}

func (f *fleet) Image(id string) (ec2front.ImageView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.images[id]
	if !ok || img.gone {
		return ec2front.ImageView{}, false
	}
	return f.imageView(img), true
}

func (f *fleet) Snapshot(id string) (ec2front.ImageView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, img := range f.images {
		for _, s := range img.snapshots {
			if s == id && !img.gone {
				return f.imageView(img), true
			}
		}
	}
	return ec2front.ImageView{}, false
}

func (f *fleet) Deregister(region, imageID string) error {
	f.mu.Lock()
	img, ok := f.images[imageID]
	if ok && img.region != "" {
		img.gone = true
	}
	f.mu.Unlock()
	f.gcLayers()
	return nil
}

// lookup finds an image the lab knows, or one moto has that the lab has no
// body for (registered another way), so that image attributes work on it.
func (f *fleet) lookup(region, id string) (*labImage, error) {
	f.mu.Lock()
	img, ok := f.image(region, id)
	f.mu.Unlock()
	if ok {
		return img, nil
	}
	out, err := f.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{id}}, inRegion(region))
	if err != nil || len(out.Images) == 0 {
		return nil, notFound(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	img = &labImage{id: id, region: region}
	f.images[id] = img
	return img, nil
}

func (f *fleet) SetDeprecation(region, imageID string, at time.Time) error {
	img, err := f.lookup(region, imageID)
	if err != nil {
		return err
	}
	f.mu.Lock()
	img.deprecation = at
	f.mu.Unlock()
	return nil
}

func (f *fleet) SetProtection(region, imageID, value string) error {
	img, err := f.lookup(region, imageID)
	if err != nil {
		return err
	}
	f.mu.Lock()
	img.protection = value
	f.mu.Unlock()
	return nil
}

// gcLayers removes layer directories that no live image and no instance
// that still has a body uses. It decides under the fleet's lock and deletes
// without it: a layer takes seconds to delete, and every API call that
// shows an instance or image takes the lock. An unused layer never becomes
// used again (new images get new layers), so deleting late is safe.
func (f *fleet) gcLayers() {
	var unused []string
	f.mu.Lock()
	used := map[string]bool{}
	for _, img := range f.images {
		if img.gone {
			continue
		}
		for _, l := range img.layers {
			used[l] = true
		}
		if img.state == "pending" {
			used[img.own] = true
		}
	}
	for _, inst := range f.instances {
		if inst.m.State() == machine.Terminated {
			continue
		}
		for _, l := range inst.layers {
			used[l] = true
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(f.stateDir, "l", "*"))
	for _, d := range dirs {
		if !used[d] && !strings.HasSuffix(d, ".tmp") {
			unused = append(unused, d)
		}
	}
	f.mu.Unlock()
	for _, d := range unused {
		if err := os.RemoveAll(d); err != nil {
			f.logf("remove layer %s: %v", d, err)
		}
	}
}

// shutdown terminates every machine and waits for background work.
func (f *fleet) shutdown() {
	f.mu.Lock()
	var ids []string
	for id, inst := range f.instances {
		if inst.m.State() != machine.Terminated {
			ids = append(ids, id)
		}
	}
	f.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		_ = f.Terminate(id)
	}
	f.wg.Wait()
}

// machineNames lists the nspawn names of all instances ever launched.
func (f *fleet) machineNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.instances {
		out = append(out, MachineName(id))
	}
	return out
}

// addrPool hands out loopback addresses from a range.
type addrPool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	used   map[netip.Addr]bool
}

func newAddrPool(cidr string) (*addrPool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, err
	}
	return &addrPool{prefix: p.Masked(), used: map[netip.Addr]bool{}}, nil
}

func (p *addrPool) take() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Skip the network address and .1 (the host side, by convention).
	a := p.prefix.Addr().Next().Next()
	for ; p.prefix.Contains(a); a = a.Next() {
		if !p.used[a] && a.As4()[3] != 255 {
			p.used[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s", p.prefix)
}

func (p *addrPool) give(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, a)
}

var _ ec2front.Backend = (*fleet)(nil)
