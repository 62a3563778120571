package realism_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/lab/ec2front"
	"github.com/latentworker/latentworker/lab/realism"
)

// bodies gives launched instances and copied images a body that does
// nothing: enough for the front to forward launches and copies. Any other
// call panics through the nil Backend.
type bodies struct{ ec2front.Backend }

func (bodies) CheckLaunch(string, string) error                   { return nil }
func (bodies) CheckCopy(string, string) error                     { return nil }
func (bodies) CopyImage(context.Context, ec2front.CopySpec) error { return nil }
func (bodies) Image(string) (ec2front.ImageView, bool)            { return ec2front.ImageView{}, false }
func (bodies) Snapshot(string) (ec2front.ImageView, bool)         { return ec2front.ImageView{}, false }
func (bodies) Terminate(string) error                             { return nil }
func (bodies) Instance(string) (ec2front.InstanceView, bool) {
	return ec2front.InstanceView{State: "running", Addr: "127.0.0.9"}, true
}
func (bodies) Launch(context.Context, ec2front.LaunchSpec) (ec2front.InstanceView, error) {
	return ec2front.InstanceView{State: "pending", Addr: "127.0.0.9"}, nil
}

// TestAccountShape: each knob of an account unlike the lab's default one,
// through the real front and moto.
func TestAccountShape(t *testing.T) {
	w := startWorld(t)
	w.front = ec2front.New(w.moto, bodies{}, nil)
	const delay = 2 * time.Second
	url := w.endpoint(t, realism.Config{
		NoDefaultVPC: true, NoPublicIPs: true,
		IAMProfileDelay: realism.Duration{Duration: delay}, IAMKeyDelay: realism.Duration{Duration: delay},
		DisabledRegions: []string{"ap-east-1"}, DeniedRegions: []string{"eu-central-1"},
		FailedCopies: []string{"us-west-2"}, InsufficientCapacity: []string{"t3.micro"},
	})
	ctx := context.Background()
	c := rawEC2(url)
	in := func(region string) *ec2.Client {
		return ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(url),
			Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""), Retryer: aws.NopRetryer{}})
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("DescribeImages: %v", err)
	}
	ami := aws.ToString(imgs.Images[0].ImageId)

	t.Run("no default VPC", func(t *testing.T) {
		vpcs, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
		if err != nil || len(vpcs.Vpcs) != 0 {
			t.Errorf("DescribeVpcs(is-default) = %v, %v; want none", vpcs, err)
		}
		all, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
		if err != nil || len(all.Vpcs) == 0 || aws.ToBool(all.Vpcs[0].IsDefault) {
			t.Errorf("DescribeVpcs = %v, %v; want moto's VPC, not default", all, err)
		}
		subs, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}})
		if err != nil || len(subs.Subnets) != 0 {
			t.Errorf("DescribeSubnets(default-for-az) = %d subnets, %v; want none", len(subs.Subnets), err)
		}
		_, err = c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), Description: aws.String("g")})
		if cd, _ := code(err); cd != "VPCIdNotSpecified" {
			t.Errorf("CreateSecurityGroup without a VPC = %v; want VPCIdNotSpecified", err)
		}
		_, err = c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if cd, _ := code(err); cd != "VPCIdNotSpecified" {
			t.Errorf("RunInstances without a subnet = %v; want VPCIdNotSpecified", err)
		}
	})

	subs, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil || len(subs.Subnets) == 0 {
		t.Fatalf("DescribeSubnets: %v", err)
	}
	subnet := aws.ToString(subs.Subnets[0].SubnetId)
	t.Run("subnets that map no public IP", func(t *testing.T) {
		for _, s := range subs.Subnets {
			if aws.ToBool(s.MapPublicIpOnLaunch) || aws.ToBool(s.DefaultForAz) {
				t.Errorf("subnet %s maps public IPs %v, default %v; want neither", aws.ToString(s.SubnetId), aws.ToBool(s.MapPublicIpOnLaunch), aws.ToBool(s.DefaultForAz))
			}
		}
		private, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small,
			SubnetId: aws.String(subnet), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		public, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), NetworkInterfaces: []types.InstanceNetworkInterfaceSpecification{{
				DeviceIndex: aws.Int32(0), SubnetId: aws.String(subnet), AssociatePublicIpAddress: aws.Bool(true)}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			id     string
			public bool
		}{{aws.ToString(private.Instances[0].InstanceId), false}, {aws.ToString(public.Instances[0].InstanceId), true}} {
			out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{tc.id}})
			if err != nil {
				t.Fatal(err)
			}
			in := out.Reservations[0].Instances[0]
			if got := aws.ToString(in.PublicIpAddress) != ""; got != tc.public || aws.ToString(in.PrivateIpAddress) == "" {
				t.Errorf("instance %s: public %q, private %q; want a public address %v and a private one", tc.id, aws.ToString(in.PublicIpAddress), aws.ToString(in.PrivateIpAddress), tc.public)
			}
		}
	})

	t.Run("a launch that ends terminated", func(t *testing.T) {
		out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
			SubnetId: aws.String(subnet), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(out.Instances[0].InstanceId)
		d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := d.Reservations[0].Instances[0]
		if in.State.Name != types.InstanceStateNameTerminated || in.StateReason == nil || aws.ToString(in.StateReason.Code) != "Server.InsufficientInstanceCapacity" {
			t.Errorf("t3.micro: state %s, reason %+v; want terminated, Server.InsufficientInstanceCapacity", in.State.Name, in.StateReason)
		}
	})

	t.Run("IAM propagation: a new instance profile, a new access key", func(t *testing.T) {
		ic := rawIAM(url)
		if _, err := ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("fresh")}); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("fresh")}); err != nil {
			t.Fatal(err)
		}
		k, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("fresh")})
		if err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		launch := func() error {
			_, err := c.RunInstances(ctx, &ec2.RunInstancesInput{DryRun: aws.Bool(true), ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small,
				SubnetId: aws.String(subnet), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
				IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String("fresh")}})
			return err
		}
		creds := credentials.NewStaticCredentialsProvider(aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey), "")
		newKey := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds, Retryer: aws.NopRetryer{}})
		newSTS := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds, Retryer: aws.NopRetryer{}})
		err = launch()
		if cd, _ := code(err); cd != "InvalidParameterValue" || !strings.Contains(err.Error(), "Invalid IAM Instance Profile name") {
			t.Errorf("RunInstances with a profile %s old = %v; want InvalidParameterValue, Invalid IAM Instance Profile name", time.Since(created), err)
		}
		_, err = newKey.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
		if cd, st := code(err); cd != "AuthFailure" || st != 401 {
			t.Errorf("EC2 with a key %s old = %v; want AuthFailure (401)", time.Since(created), err)
		}
		_, err = newSTS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if cd, _ := code(err); cd != "InvalidClientTokenId" {
			t.Errorf("STS with a key %s old = %v; want InvalidClientTokenId", time.Since(created), err)
		}
		time.Sleep(time.Until(created.Add(delay)))
		if err := launch(); !strings.Contains(err.Error(), "DryRunOperation") {
			t.Errorf("RunInstances with the profile after %s = %v; want DryRunOperation", delay, err)
		}
		if _, err := newKey.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
			t.Errorf("EC2 with the key after %s = %v", delay, err)
		}
	})

	t.Run("regions not enabled, regions denied", func(t *testing.T) {
		all, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]string{}
		for _, r := range all.Regions {
			status[aws.ToString(r.RegionName)] = aws.ToString(r.OptInStatus)
		}
		if status["ap-east-1"] != "not-opted-in" || status["us-east-1"] == "not-opted-in" {
			t.Errorf("DescribeRegions(AllRegions) opt-in: ap-east-1 %q, us-east-1 %q; want ap-east-1 not-opted-in", status["ap-east-1"], status["us-east-1"])
		}
		enabled, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{})
		for _, r := range enabled.Regions {
			if aws.ToString(r.RegionName) == "ap-east-1" {
				t.Errorf("DescribeRegions lists ap-east-1, not enabled")
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = in("ap-east-1").DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
		if cd, _ := code(err); cd != "AuthFailure" {
			t.Errorf("EC2 in a region not enabled = %v; want AuthFailure", err)
		}
		_, err = in("eu-central-1").CopyImage(ctx, &ec2.CopyImageInput{DryRun: aws.Bool(true), SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"), Name: aws.String("x")})
		if cd, st := code(err); cd != "UnauthorizedOperation" || st != 403 {
			t.Errorf("CopyImage(DryRun) into a denied region = %v; want UnauthorizedOperation (403)", err)
		}
		_, err = in("eu-west-1").CopyImage(ctx, &ec2.CopyImageInput{DryRun: aws.Bool(true), SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"), Name: aws.String("x")})
		if cd, _ := code(err); cd != "DryRunOperation" {
			t.Errorf("CopyImage(DryRun) into an ordinary region = %v; want DryRunOperation", err)
		}
	})

	t.Run("a copy that fails late", func(t *testing.T) {
		west := in("us-west-2")
		out, err := west.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"), Name: aws.String("copy")})
		if err != nil {
			t.Fatal(err)
		}
		d, err := west.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}})
		if err != nil || len(d.Images) != 1 {
			t.Fatalf("DescribeImages(copy) = %v, %v", d, err)
		}
		if im := d.Images[0]; im.State != types.ImageStateFailed || im.StateReason == nil || aws.ToString(im.StateReason.Message) == "" {
			t.Errorf("copy in us-west-2: state %s, reason %+v; want failed with a reason", im.State, im.StateReason)
		}
	})
}
