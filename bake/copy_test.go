package bake

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
)

// copyFake is one region's EC2 for the copy step: a copy that ends in
// state end (AWS fails a copy asynchronously, e.g. when the key cannot be
// used, which the lab does not do), and the undo calls. Any other call
// panics through the nil embedded interface.
type copyFake struct {
	EC2API
	region string
	end    types.ImageState
	mu     *sync.Mutex
	calls  *[]string
	tags   []types.Tag
	id     string
}

func (f *copyFake) log(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.calls = append(*f.calls, f.region+" "+s)
}

func (f *copyFake) CopyImage(_ context.Context, in *ec2.CopyImageInput, _ ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	f.log("CopyImage " + aws.ToString(in.SourceImageId) + " from " + aws.ToString(in.SourceRegion) + " token " + aws.ToString(in.ClientToken))
	if !aws.ToBool(in.Encrypted) || aws.ToString(in.KmsKeyId) != "alias/lw" {
		return nil, errors.New("copy not encrypted with the alias")
	}
	for _, ts := range in.TagSpecifications {
		if ts.ResourceType == types.ResourceTypeImage {
			f.tags = ts.Tags
		}
	}
	return &ec2.CopyImageOutput{ImageId: aws.String(f.id)}, nil
}

func (f *copyFake) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	if len(in.ImageIds) == 0 {
		// Looking for a copy an earlier attempt made: none.
		f.log("DescribeImages copies")
		return &ec2.DescribeImagesOutput{}, nil
	}
	f.log("DescribeImages " + strings.Join(in.ImageIds, ","))
	im := types.Image{ImageId: aws.String(f.id), State: f.end, Tags: f.tags,
		BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"),
			Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-" + f.region), Encrypted: aws.Bool(true)}}}}
	if f.end == types.ImageStateFailed {
		im.StateReason = &types.StateReason{Message: aws.String("KMS key is disabled")}
	}
	return &ec2.DescribeImagesOutput{Images: []types.Image{im}}, nil
}

func (f *copyFake) DeregisterImage(_ context.Context, in *ec2.DeregisterImageInput, _ ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	f.log("DeregisterImage " + aws.ToString(in.ImageId))
	return &ec2.DeregisterImageOutput{}, nil
}

func (f *copyFake) DescribeSnapshots(_ context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	return &ec2.DescribeSnapshotsOutput{}, nil
}

func (f *copyFake) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	f.log("DeleteSnapshot " + aws.ToString(in.SnapshotId))
	return &ec2.DeleteSnapshotOutput{}, nil
}

// copyRun runs the copy step (after verifyImage with verify) of an image
// to us-west-2, whose copy becomes available, and eu-west-1, whose copy
// fails, and returns the result and every call each region got.
func copyRun(verify bool) (*Result, *[]string, map[string]*copyFake, error) {
	var mu sync.Mutex
	var calls []string
	home := &copyFake{region: "us-east-1", end: types.ImageStateAvailable, mu: &mu, calls: &calls, id: "ami-00000000000000001"}
	regions := map[string]*copyFake{
		"us-west-2": {region: "us-west-2", end: types.ImageStateAvailable, mu: &mu, calls: &calls, id: "ami-00000000000000002"},
		"eu-west-1": {region: "eu-west-1", end: types.ImageStateFailed, mu: &mu, calls: &calls, id: "ami-00000000000000003"},
	}
	cfg := config.Default()
	cfg.Worker.Name = "w"
	cfg.AWS.Region = "us-east-1"
	cfg.AWS.CopyToRegions = []string{"us-west-2", "eu-west-1"}
	cfg.Image.KMSKeyID = "alias/lw"
	made := func(_ context.Context, s *State) error {
		s.ImageID, s.ImageName, s.SnapshotIDs = home.id, "latentworker-w-20261201-120000", []string{"snap-us-east-1"}
		s.pushImageUndo(s.ImageID)
		return nil
	}
	steps := []Step{{StepCreateImage, made}, {StepCopyImage, copyImages}}
	if verify {
		steps = []Step{steps[0], {StepVerifyImage, verifyImage}, steps[1]}
	}
	res, err := Run(context.Background(), Options{
		Config: cfg, Password: config.NewSecret("hunter2-secret"), EC2: home, STS: fakeSTS{},
		RegionEC2: func(r string) EC2API { return regions[r] },
		Region:    "us-east-1", RunID: "20261201T120000Z-0c0c0c", NoVerify: true,
		Timeouts: Timeouts{Poll: 10 * time.Millisecond, Image: 5 * time.Second},
		Steps:    steps,
	})
	return res, &calls, regions, err
}

// TestFailedCopyKeepsTheImage: once the image is verified, one copy
// becomes available and the other fails. The verified image is not lost
// for it (before, the whole run was rolled back): the run completes with
// the image and the good copy (exit 4 on the command line), the failed
// copy is removed (deregistered, its snapshot deleted, in its region), and
// the error (ErrCopy) names the region and AWS's reason.
func TestFailedCopyKeepsTheImage(t *testing.T) {
	res, callp, regions, err := copyRun(true)
	calls := *callp
	home := &copyFake{id: "ami-00000000000000001"}
	if !errors.Is(err, ErrCopy) || !strings.Contains(err.Error(), "eu-west-1") || !strings.Contains(err.Error(), "KMS key is disabled") {
		t.Fatalf("Run = %v; want ErrCopy naming eu-west-1 and the reason", err)
	}
	if !res.Completed || len(res.Leftovers) != 0 {
		t.Errorf("Completed = %v, leftovers = %v; want the run complete, nothing left", res.Completed, res.Leftovers)
	}
	m := res.Manifest
	if m.ImageID != home.id || m.Copies["us-west-2"] != "ami-00000000000000002" || len(m.Copies) != 1 || !strings.Contains(m.CopyFailures["eu-west-1"], "KMS key is disabled") {
		t.Errorf("manifest image %s, copies %v, failures %v; want the image, the us-west-2 copy and the eu-west-1 failure", m.ImageID, m.Copies, m.CopyFailures)
	}
	got := strings.Join(calls, "\n")
	for _, want := range []string{
		"us-west-2 CopyImage ami-00000000000000001 from us-east-1 token 20261201T120000Z-0c0c0c-copy-us-west-2",
		"eu-west-1 DeregisterImage ami-00000000000000003",
		"eu-west-1 DeleteSnapshot snap-eu-west-1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("calls lack %q:\n%s", want, got)
		}
	}
	for _, gone := range []string{"us-west-2 DeregisterImage", "us-east-1 DeregisterImage", "us-east-1 DeleteSnapshot", "us-west-2 DeleteSnapshot"} {
		if strings.Contains(got, gone) {
			t.Errorf("undo made %q: the image and the good copy must be kept:\n%s", gone, got)
		}
	}
	tags := map[string]string{}
	for _, tg := range regions["us-west-2"].tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags[fleet.TagRunID] != "20261201T120000Z-0c0c0c" || tags[fleet.TagWorker] != "w" || tags[fleet.TagRole] != "image" ||
		tags[fleet.TagCopyOf] != home.id || tags[fleet.TagSourceRegion] != "us-east-1" {
		t.Errorf("copy tags = %v", tags)
	}
}

func TestCopyChecks(t *testing.T) {
	im := func(enc bool, tags ...string) types.Image {
		i := types.Image{ImageId: aws.String("ami-1"), BlockDeviceMappings: []types.BlockDeviceMapping{{Ebs: &types.EbsBlockDevice{Encrypted: aws.Bool(enc)}}}}
		for j := 0; j+1 < len(tags); j += 2 {
			i.Tags = append(i.Tags, types.Tag{Key: aws.String(tags[j]), Value: aws.String(tags[j+1])})
		}
		return i
	}
	want := map[string]string{"k": "v"}
	if err := checkCopy(im(true, "k", "v"), want, true); err != nil {
		t.Errorf("good copy: %v", err)
	}
	if err := checkCopy(im(true), want, true); err == nil || !strings.Contains(err.Error(), "tag k") {
		t.Errorf("untagged copy: %v; want the tag named", err)
	}
	if err := checkCopy(im(false, "k", "v"), want, true); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("unencrypted copy: %v", err)
	}
	if err := checkCopy(im(false, "k", "v"), want, false); err != nil {
		t.Errorf("unencrypted copy not asked encrypted: %v", err)
	}
}
