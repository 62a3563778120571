package handoff

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/iam"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// TestHandoffCopyRegion hands off a worker's AMI in a copy region, in
// moto: the IAM user is the region's own (latentworker-WORKER-REGION),
// the policy and bundle name that region and its AMI; and an AMI whose
// snapshot is encrypted with a customer managed key makes the policy let
// the key use it through EC2 there only.
func TestHandoffCopyRegion(t *testing.T) {
	url := mototest.Start(t)
	const region, worker = "us-west-2", "lw-copy"
	creds := credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", testSecret, "")
	api := ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(url), Credentials: creds})
	km := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(url), Credentials: creds})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The copy: an image tagged for the worker, from an instance of one
	// of moto's AMIs.
	base, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, MaxResults: aws.Int32(5)})
	if err != nil || len(base.Images) == 0 {
		t.Fatalf("moto AMIs: %v", err)
	}
	inst, err := api.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: base.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1), InstanceType: types.InstanceTypeT3Small})
	if err != nil {
		t.Fatal(err)
	}
	labels := fleet.Labels{RunID: "20261201T120000Z-0c0c0c", Worker: worker}
	img, err := api.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: inst.Instances[0].InstanceId, Name: aws.String("latentworker-lw-copy-20261201-120000"),
		TagSpecifications: []types.TagSpecification{labels.Spec(types.ResourceTypeImage, fleet.RoleImage, "")}})
	if err != nil {
		t.Fatal(err)
	}
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkLFV3cQtbfeE3LRFhQUIQzu0RgBr2iiCNgMVm0jU10 owner@example.org\n"
	o := Options{
		Worker: worker, MasterAddress: "127.0.0.1:9989", Region: region, InstanceTypes: []string{"t3.small"},
		PublicKey: pub, RegionalUser: true,
		EC2: api, KMS: km, IAM: awsiam.New(awsiam.Options{Region: region, BaseEndpoint: aws.String(url), Credentials: creds}),
		STS: sts.New(sts.Options{Region: region, BaseEndpoint: aws.String(url), Credentials: creds}),
	}
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("handoff in %s: %v", region, err)
	}
	if res.Bundle.Region != region || res.Bundle.AMI != aws.ToString(img.ImageId) || !strings.HasSuffix(res.UserARN, "/"+iam.Name(worker)+"-"+region) {
		t.Errorf("bundle region %s AMI %s user %s; want %s, %s and the region's own user", res.Bundle.Region, res.Bundle.AMI, res.UserARN, region, aws.ToString(img.ImageId))
	}
	doc, err := iam.NewManager(o.IAM).Policy(ctx, iam.User{Name: iam.Name(worker) + "-" + region, ARN: res.UserARN})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := doc.JSON()
	if !strings.Contains(string(b), `"`+region+`"`) || strings.Contains(string(b), "kms:") {
		t.Errorf("policy of an unencrypted copy:\n%s\nwant it scoped to %s, without KMS", b, region)
	}

	// An AMI whose snapshot a customer managed key encrypts.
	key, err := km.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	vol, err := api.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(region + "a"), Size: aws.Int32(8), Encrypted: aws.Bool(true), KmsKeyId: key.KeyMetadata.Arn})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := api.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	// moto keeps a key on a copied snapshot only.
	snap, err := api.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: plain.SnapshotId, SourceRegion: aws.String(region),
		Encrypted: aws.Bool(true), KmsKeyId: key.KeyMetadata.Arn})
	if err != nil {
		t.Fatal(err)
	}
	encImg := types.Image{ImageId: img.ImageId, BlockDeviceMappings: []types.BlockDeviceMapping{
		{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: snap.SnapshotId, Encrypted: aws.Bool(true)}},
	}}
	keys, err := o.kmsKeys(ctx, encImg)
	if err != nil || len(keys) != 1 || keys[0] != aws.ToString(key.KeyMetadata.Arn) {
		t.Fatalf("kmsKeys = %v, %v; want [%s]", keys, err, aws.ToString(key.KeyMetadata.Arn))
	}
	st := iam.KMSStatements(region, keys)
	if len(st) != 2 || st[0].Condition["StringEquals"]["kms:ViaService"][0] != "ec2."+region+".amazonaws.com" {
		t.Errorf("KMS statements = %+v", st)
	}
}
