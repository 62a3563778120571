package cleanup

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/fleet"
)

// motoClients returns a ClientFunc for moto at url; "" is us-east-1.
func motoClients(url string) (ClientFunc, func(string) *ec2.Client) {
	var mu sync.Mutex
	cs := map[string]*ec2.Client{}
	get := func(region string) *ec2.Client {
		if region == "" {
			region = "us-east-1"
		}
		mu.Lock()
		defer mu.Unlock()
		if c, ok := cs[region]; ok {
			return c
		}
		c := ec2.New(ec2.Options{
			Region:       region,
			BaseEndpoint: aws.String(url),
			Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		})
		cs[region] = c
		return c
	}
	return func(region string) EC2API { return get(region) }, get
}

// seeder creates resources the way bake and the handoff tag them.
type seeder struct {
	tb   testing.TB
	ctx  context.Context
	c    *ec2.Client
	base string // a moto AMI to launch from
}

func newSeeder(tb testing.TB, c *ec2.Client) *seeder {
	ctx := context.Background()
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"amazon"}, Filters: []types.Filter{filter("architecture", "x86_64")}, MaxResults: aws.Int32(5),
	})
	if err != nil || len(out.Images) == 0 {
		tb.Fatalf("finding a moto AMI: %v (%d images)", err, len(out.Images))
	}
	return &seeder{tb: tb, ctx: ctx, c: c, base: aws.ToString(out.Images[0].ImageId)}
}

func (s *seeder) labels(runID, worker string, expires time.Time) fleet.Labels {
	return fleet.Labels{RunID: runID, Worker: worker, Expires: expires, Creator: "arn:aws:iam::123456789012:user/test"}
}

func (s *seeder) keyPair(l fleet.Labels) string {
	name := fleet.TempName(l.RunID)
	out, err := s.c.CreateKeyPair(s.ctx, &ec2.CreateKeyPairInput{
		KeyName: aws.String(name), KeyType: types.KeyTypeEd25519,
		TagSpecifications: []types.TagSpecification{l.Spec(types.ResourceTypeKeyPair, fleet.RoleTempKey, name)},
	})
	if err != nil {
		s.tb.Fatalf("CreateKeyPair %s: %v", name, err)
	}
	return aws.ToString(out.KeyPairId)
}

func (s *seeder) group(l fleet.Labels) string {
	name := fleet.TempName(l.RunID)
	out, err := s.c.CreateSecurityGroup(s.ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String(name), Description: aws.String("test"),
		TagSpecifications: []types.TagSpecification{l.Spec(types.ResourceTypeSecurityGroup, fleet.RoleTempSG, name)},
	})
	if err != nil {
		s.tb.Fatalf("CreateSecurityGroup %s: %v", name, err)
	}
	return aws.ToString(out.GroupId)
}

// instances launches n instances from ami with tags (none when nil) and
// security group sg (default when "").
func (s *seeder) instances(ami string, n int, sg string, tags []types.Tag) []string {
	in := &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
		MinCount: aws.Int32(int32(n)), MaxCount: aws.Int32(int32(n)),
	}
	if sg != "" {
		in.SecurityGroupIds = []string{sg}
	}
	if tags != nil {
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}}
	}
	out, err := s.c.RunInstances(s.ctx, in)
	if err != nil {
		s.tb.Fatalf("RunInstances from %s: %v", ami, err)
	}
	var ids []string
	for _, i := range out.Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	return ids
}

func (s *seeder) instance(ami, sg string, tags []types.Tag) string {
	return s.instances(ami, 1, sg, tags)[0]
}

// handoff launches an instance the way EC2LatentWorker does: untagged,
// then tagged after launch (when tags is not nil).
func (s *seeder) handoff(ami string, tags map[string]string) string {
	id := s.instance(ami, "", nil)
	if tags != nil {
		s.tag(id, tags)
	}
	return id
}

func (s *seeder) tag(id string, tags map[string]string) {
	var ts []types.Tag
	for k, v := range tags {
		ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	if _, err := s.c.CreateTags(s.ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: ts}); err != nil {
		s.tb.Fatalf("CreateTags %s: %v", id, err)
	}
}

func (s *seeder) stop(id string) {
	if _, err := s.c.StopInstances(s.ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		s.tb.Fatalf("StopInstances %s: %v", id, err)
	}
}

// image makes an AMI of instance as bake does, tagging its snapshots
// afterwards (moto fails a snapshot tag specification in CreateImage).
func (s *seeder) image(l fleet.Labels, instance, name string) (string, []string) {
	out, err := s.c.CreateImage(s.ctx, &ec2.CreateImageInput{
		InstanceId: aws.String(instance), Name: aws.String(name),
		TagSpecifications: []types.TagSpecification{l.Spec(types.ResourceTypeImage, fleet.RoleImage, name)},
	})
	if err != nil {
		s.tb.Fatalf("CreateImage %s: %v", name, err)
	}
	id := aws.ToString(out.ImageId)
	d, err := s.c.DescribeImages(s.ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil || len(d.Images) != 1 {
		s.tb.Fatalf("DescribeImages %s: %v", id, err)
	}
	snaps := imageSnapshots(d.Images[0])
	if len(snaps) > 0 {
		if _, err := s.c.CreateTags(s.ctx, &ec2.CreateTagsInput{Resources: snaps, Tags: l.Tags(fleet.RoleSnapshot, name)}); err != nil {
			s.tb.Fatalf("tagging snapshots %v: %v", snaps, err)
		}
	}
	return id, snaps
}

func (s *seeder) state(id string) types.InstanceStateName {
	out, err := s.c.DescribeInstances(s.ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 {
		s.tb.Fatalf("DescribeInstances %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0].State.Name
}

func (s *seeder) imageState(id string) string {
	out, err := s.c.DescribeImages(s.ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil || len(out.Images) == 0 {
		return "gone"
	}
	return string(out.Images[0].State)
}
