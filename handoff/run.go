package handoff

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/iam"
)

// TagHandedOff marks, on an AMI, when it was last handed off: the newest
// such AMI of a worker is the one the admins run, and the one the next
// handoff reports as replaced.
const TagHandedOff = fleet.TagHandedOff

// RoleMaster is the fleet role of the key pair and security group the
// master names.
const RoleMaster fleet.Role = "master"

// EC2API is the part of the EC2 client a handoff uses.
type EC2API interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeInstanceTypeOfferings(context.Context, *ec2.DescribeInstanceTypeOfferingsInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error)
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
	ImportKeyPair(context.Context, *ec2.ImportKeyPairInput, ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	ModifyImageAttribute(context.Context, *ec2.ModifyImageAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DescribeInstanceTypes(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
}

// KMSAPI is the part of the KMS client a handoff uses: whether a key that
// encrypts the AMI is a customer managed one.
type KMSAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

// STSAPI is the part of the STS client a handoff uses.
type STSAPI interface {
	GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// Options configure a handoff.
type Options struct {
	Worker        string
	MasterAddress string
	Region        string
	InstanceTypes []string
	// SubnetID is the subnet instances run in; "" picks the default VPC's
	// default subnet (the first by availability zone).
	SubnetID string
	// AMI is the image to hand off; "" picks the newest this tool baked
	// for the worker.
	AMI string
	// FindNewest hands off no fixed AMI: the master finds the worker's
	// newest AMI by itself (Bundle.FindNewest), and the key may launch any
	// completed image of the worker. NamePrefix is image.name_prefix, what
	// the images' names start with. In a CheckOnly run, FindNewest is also
	// taken when the key's policy is of that kind.
	FindNewest bool
	NamePrefix string
	// KeyPairName is the EC2 key pair the master names; "" means
	// latentworker-WORKER. PublicKey (an authorized_keys line, whose
	// private half the owner keeps) is imported when it does not exist.
	KeyPairName string
	PublicKey   string
	// Rotate creates a second access key while the old stays active;
	// RetireOld deletes the older key once the admins have switched.
	Rotate, RetireOld bool
	// BuildWaitTimeout goes into the bundle (build_wait_timeout=); 0 means
	// DefaultBuildWaitTimeout.
	BuildWaitTimeout time.Duration
	// CheckOnly creates nothing and changes neither the policy, the keys
	// nor the AMI's tags: what a handoff makes must exist (else
	// ErrNotHandedOff), and a policy other than the handoff's is reported
	// (Result.PolicyDiffers). It gives the bundle of the current key, for
	// Check. (The instance profile's role is still put right when it
	// drifted, as a handoff does.)
	CheckOnly bool
	// WantNewSecret: the caller shows or encrypts a new secret access key
	// (--show-secret, --encrypt-to). A handoff that would make none (the
	// user has a key and Rotate is not asked) fails with ErrNoNewSecret
	// before it creates or changes anything: AWS shows a secret only once.
	WantNewSecret bool
	// StoreSecret stores the bundle of a new access key, secret included,
	// the moment the key exists (AWS never shows the secret again). When it
	// fails, Run deletes the key again and fails with ErrSecretNotStored:
	// no key is left whose secret nobody has. Nil: the caller takes the
	// secret from the Result.
	StoreSecret func(Bundle) error
	// RegionalUser hands off with an IAM user of the region,
	// latentworker-WORKER-REGION: for a copy region (aws.copy_to_regions),
	// whose master gets a key of its own with a policy scoped to that
	// region, while the bake region's key keeps its own.
	RegionalUser bool

	EC2 EC2API
	// KMS tells a customer managed key from AWS's aws/ebs; nil: every key
	// that encrypts the AMI is taken as customer managed.
	KMS KMSAPI
	IAM iam.API
	STS STSAPI
	Now func() time.Time
}

// Result is what a handoff did and the bundle for the admins.
type Result struct {
	Bundle        Bundle
	PolicyChanged bool
	Created       []string // what this handoff created, e.g. "security group sg-..."
	Retired       []iam.KeyInfo
	// IMDSv2Set is true when this handoff set the AMI's imds-support to
	// v2.0 (it was not yet).
	IMDSv2Set bool
	// Who and what Check needs: the key's user, the worker's instance
	// profile and the account.
	UserARN            string
	InstanceProfileARN string
	AccountID          string
	// PolicyDiffers is a CheckOnly run that found the key's policy
	// different from the one a handoff writes (the check goes on with the
	// policy as it is).
	PolicyDiffers bool
}

// ErrNotHandedOff is a CheckOnly run that found a part of the handoff
// missing or different.
var ErrNotHandedOff = errors.New("not handed off as this handoff would (run latentworker handoff)")

// ErrPublicImage refuses to hand off a public AMI: it holds the worker
// password.
var ErrPublicImage = errors.New("the AMI is public, and it holds the worker password: make it private first")

// ErrNoImage is returned when the worker has no AMI to hand off.
var ErrNoImage = errors.New("no AMI to hand off")

// ErrNoNewSecret is a handoff asked to show or encrypt a secret
// (Options.WantNewSecret) that would make no new access key: found before
// anything is created or changed.
var ErrNoNewSecret = errors.New("no new secret access key")

// ErrSecretNotStored is a new access key whose secret Options.StoreSecret
// could not store: the key was deleted again.
var ErrSecretNotStored = errors.New("the new secret access key could not be stored")

// Run prepares what the master needs — the key pair, a security group
// without inbound rules, the worker's instance profile, its IAM user with
// the least-privilege policy and an access key — and returns the bundle.
// It is idempotent: run again after a refresh, it reuses the user and key,
// moves the policy to the new AMI and reports the change.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.InstanceTypes) == 0 {
		return nil, errors.New("handoff: no instance type")
	}
	res := &Result{}
	id, err := o.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, fmt.Errorf("checking AWS credentials (sts GetCallerIdentity): %w", err)
	}
	account := aws.ToString(id.Account)

	img, prevHandedOff, err := o.image(ctx)
	if err != nil {
		return nil, err
	}
	m := iam.NewManager(o.IAM)
	m.Partition = iam.Partition(o.Region)
	if o.RegionalUser {
		m.UserSuffix = "-" + o.Region
	}
	if !o.CheckOnly {
		if err := o.checkKeys(ctx, m); err != nil {
			return nil, err
		}
	}
	ami := aws.ToString(img.ImageId)
	// Instances launched from the AMI require IMDSv2: EC2LatentWorker (3.7
	// and 4.x) passes no MetadataOptions, so the image says it. AWS cannot
	// undo this, and it is what every instance of a worker should have.
	if img.ImdsSupport != types.ImdsSupportValuesV20 {
		if _, err := o.EC2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
			ImageId: aws.String(ami), ImdsSupport: &types.AttributeValue{Value: aws.String(string(types.ImdsSupportValuesV20))},
		}); err != nil {
			return nil, fmt.Errorf("requiring IMDSv2 on AMI %s (imds-support v2.0): %w", ami, err)
		}
		res.IMDSv2Set = true
	}
	subnet, vpc, err := o.subnet(ctx)
	if err != nil {
		return nil, err
	}
	keyName, err := o.keyPair(ctx, res)
	if err != nil {
		return nil, err
	}
	sg, err := o.securityGroup(ctx, vpc, res)
	if err != nil {
		return nil, err
	}

	keys, err := o.kmsKeys(ctx, img)
	if err != nil {
		return nil, err
	}
	if o.CheckOnly {
		if _, err := o.IAM.GetInstanceProfile(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(iam.Name(o.Worker))}); err != nil {
			return nil, fmt.Errorf("instance profile %s: %w: %v", iam.Name(o.Worker), ErrNotHandedOff, err)
		}
		if _, err := o.IAM.GetUser(ctx, &awsiam.GetUserInput{UserName: aws.String(iam.Name(o.Worker) + m.UserSuffix)}); err != nil {
			return nil, fmt.Errorf("IAM user %s: %w: %v", iam.Name(o.Worker)+m.UserSuffix, ErrNotHandedOff, err)
		}
	}
	profile, err := m.EnsureInstanceProfile(ctx, o.Worker)
	if err != nil {
		return nil, err
	}
	user, err := m.EnsureUser(ctx, o.Worker)
	if err != nil {
		return nil, err
	}
	tags := map[string]string{fleet.TagWorker: o.Worker}
	var have iam.Document
	if o.CheckOnly {
		if have, err = m.Policy(ctx, user); err != nil {
			return nil, err
		}
		o.FindNewest = o.FindNewest || slices.ContainsFunc(have.Statement, func(s iam.Statement) bool { return s.Sid == iam.SidFindNewest })
	}
	po := iam.PolicyOptions{
		Region: o.Region, AccountID: account, AMIs: []string{ami}, InstanceTypes: o.InstanceTypes,
		KeyPair: keyName, SecurityGroupID: sg, SubnetID: subnet,
		InstanceProfileARN: profile.ARN, RoleARN: profile.RoleARN, Tags: tags, KMSKeys: keys,
	}
	if o.FindNewest {
		// Any completed image of the worker, not this one: the policy
		// stays the same across refreshes.
		po.AMIs, po.FindNewest, po.Worker = nil, true, o.Worker
	}
	doc, err := iam.WorkerPolicy(po)
	if err != nil {
		return nil, fmt.Errorf("policy for worker %s: %w", o.Worker, err)
	}
	res.UserARN, res.InstanceProfileARN, res.AccountID = user.ARN, profile.ARN, account
	if o.CheckOnly {
		res.PolicyDiffers = !reflect.DeepEqual(have, doc)
	} else if res.PolicyChanged, err = m.PutPolicy(ctx, user, doc); err != nil {
		return nil, err
	}

	b := Bundle{
		WorkerName: o.Worker, MasterAddress: o.MasterAddress, InstanceTypes: o.InstanceTypes,
		Region: o.Region, AMI: ami, KeyPairName: keyName, SecurityGroupID: sg, SubnetID: subnet,
		InstanceProfileName: profile.Name, Tags: tags,
		ReplacesAMI:      tagValue(img.Tags, fleet.TagReplaces),
		BuildWaitTimeout: o.BuildWaitTimeout,
	}
	if o.FindNewest {
		b.FindNewest, b.AMIOwner = true, account
		b.AMILocationRegex = AMILocationRegex(account, o.NamePrefix, o.Worker)
	}
	b.ParallelTests = o.vcpus(ctx, o.InstanceTypes[0])
	if prevHandedOff != "" && prevHandedOff != ami && !o.FindNewest {
		b.Changes.OldAMI = prevHandedOff
	}
	if err := o.keys(ctx, m, user, &b, res); err != nil {
		return nil, err
	}
	// Mark the AMI as the one the admins run.
	if o.CheckOnly {
		res.Bundle = b
		return res, nil
	}
	now := aws.String(o.Now().UTC().Format(time.RFC3339))
	mark := []types.Tag{{Key: aws.String(TagHandedOff), Value: now}}
	if o.FindNewest && tagValue(img.Tags, fleet.TagReady) == "" {
		// Baked before images were tagged ready: handing it off says it is.
		mark = append(mark, types.Tag{Key: aws.String(fleet.TagReady), Value: now})
	}
	if _, err := o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{ami}, Tags: mark}); err != nil {
		return nil, fmt.Errorf("tagging AMI %s as handed off: %w", ami, err)
	}
	res.Bundle = b
	return res, nil
}

// image finds the AMI to hand off and the one handed off before.
func (o Options) image(ctx context.Context) (types.Image, string, error) {
	out, err := o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + fleet.TagWorker), Values: []string{o.Worker}},
			{Name: aws.String("tag:" + fleet.TagRole), Values: []string{string(fleet.RoleImage)}},
		},
	})
	if err != nil {
		return types.Image{}, "", fmt.Errorf("listing the AMIs of worker %s: %w", o.Worker, err)
	}
	imgs := out.Images
	sort.Slice(imgs, func(i, j int) bool { return aws.ToString(imgs[i].CreationDate) > aws.ToString(imgs[j].CreationDate) })
	prev, prevAt := "", ""
	for _, im := range imgs {
		if at := tagValue(im.Tags, TagHandedOff); at > prevAt {
			prev, prevAt = aws.ToString(im.ImageId), at
		}
	}
	var img *types.Image
	for i := range imgs {
		if o.AMI == "" && imgs[i].State == types.ImageStateAvailable || o.AMI != "" && aws.ToString(imgs[i].ImageId) == o.AMI {
			img = &imgs[i]
			break
		}
	}
	if img == nil {
		if o.AMI != "" {
			return types.Image{}, "", fmt.Errorf("%w: %s is not an AMI latentworker baked for worker %s in %s", ErrNoImage, o.AMI, o.Worker, o.Region)
		}
		return types.Image{}, "", fmt.Errorf("%w: worker %s has no available AMI in %s (run latentworker bake)", ErrNoImage, o.Worker, o.Region)
	}
	if aws.ToBool(img.Public) {
		return types.Image{}, "", fmt.Errorf("AMI %s: %w", aws.ToString(img.ImageId), ErrPublicImage)
	}
	return *img, prev, nil
}

// kmsKeys returns the ARNs of the customer managed KMS keys that encrypt
// img's snapshots: the master's key must use them (through EC2 only) to
// launch it. AWS's own aws/ebs key needs no permission of the key.
func (o Options) kmsKeys(ctx context.Context, img types.Image) ([]string, error) {
	var snaps []string
	for _, bd := range img.BlockDeviceMappings {
		if bd.Ebs != nil && aws.ToBool(bd.Ebs.Encrypted) && aws.ToString(bd.Ebs.SnapshotId) != "" {
			snaps = append(snaps, aws.ToString(bd.Ebs.SnapshotId))
		}
	}
	if len(snaps) == 0 {
		return nil, nil
	}
	out, err := o.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: snaps})
	if err != nil {
		return nil, fmt.Errorf("reading the KMS keys of AMI %s's snapshots: %w", aws.ToString(img.ImageId), err)
	}
	var keys []string
	for _, sn := range out.Snapshots {
		k := aws.ToString(sn.KmsKeyId)
		if k == "" || slices.Contains(keys, k) {
			continue
		}
		if o.KMS != nil {
			d, err := o.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
			if err != nil {
				return nil, fmt.Errorf("describing KMS key %s of AMI %s: %w", k, aws.ToString(img.ImageId), err)
			}
			if d.KeyMetadata.KeyManager == kmstypes.KeyManagerTypeAws {
				continue
			}
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// subnet returns the configured subnet, or the default VPC's first default
// subnet (by availability zone) in a zone that offers every instance type
// handed off, and its VPC. A configured subnet in a zone that does not
// offer one is an error naming the zones that do.
func (o Options) subnet(ctx context.Context) (string, string, error) {
	in := &ec2.DescribeSubnetsInput{}
	if o.SubnetID != "" {
		in.SubnetIds = []string{o.SubnetID}
	} else {
		in.Filters = []types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}
	}
	out, err := o.EC2.DescribeSubnets(ctx, in)
	if err != nil {
		return "", "", fmt.Errorf("describing subnets: %w", err)
	}
	subs := out.Subnets
	if len(subs) == 0 {
		return "", "", errors.New("aws.subnet_id: not set, and the region has no default VPC subnet (accounts of an organisation often have none): set it to a subnet of your VPC")
	}
	sort.Slice(subs, func(i, j int) bool {
		return aws.ToString(subs[i].AvailabilityZone) < aws.ToString(subs[j].AvailabilityZone)
	})
	zones, err := o.offeredZones(ctx)
	if err != nil {
		return "", "", err
	}
	for _, sn := range subs {
		if zones == nil || zones[aws.ToString(sn.AvailabilityZone)] {
			return aws.ToString(sn.SubnetId), aws.ToString(sn.VpcId), nil
		}
	}
	var offered []string
	for z := range zones {
		offered = append(offered, z)
	}
	sort.Strings(offered)
	if o.SubnetID != "" {
		return "", "", fmt.Errorf("aws.subnet_id %s is in %s, which does not offer %s (offered in %s): the master's launches would fail there",
			o.SubnetID, aws.ToString(subs[0].AvailabilityZone), strings.Join(o.InstanceTypes, ", "), strings.Join(offered, ", "))
	}
	return "", "", fmt.Errorf("no default subnet is in a zone that offers %s (offered in %s): set aws.subnet_id", strings.Join(o.InstanceTypes, ", "), strings.Join(offered, ", "))
}

// offeredZones returns the zones that offer every instance type handed
// off, or nil when the caller may not ask (DescribeInstanceTypeOfferings).
func (o Options) offeredZones(ctx context.Context) (map[string]bool, error) {
	var zones map[string]bool
	for _, t := range o.InstanceTypes {
		these := map[string]bool{}
		p := ec2.NewDescribeInstanceTypeOfferingsPaginator(o.EC2, &ec2.DescribeInstanceTypeOfferingsInput{
			LocationType: types.LocationTypeAvailabilityZone,
			Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: []string{t}}},
		})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if awserr.Denied(err) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("finding the zones that offer %s: %w", t, err)
			}
			for _, of := range out.InstanceTypeOfferings {
				if z := aws.ToString(of.Location); zones == nil || zones[z] {
					these[z] = true
				}
			}
		}
		zones = these
	}
	return zones, nil
}

func (o Options) labels() fleet.Labels { return fleet.Labels{Worker: o.Worker} }

// keyPair makes sure the key pair the master names exists.
func (o Options) keyPair(ctx context.Context, res *Result) (string, error) {
	name := o.KeyPairName
	if name == "" {
		name = iam.Name(o.Worker)
	}
	_, err := o.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}})
	if err == nil {
		return name, nil
	}
	if awserr.Code(err) != "InvalidKeyPair.NotFound" {
		return "", fmt.Errorf("describing key pair %s: %w", name, err)
	}
	if o.CheckOnly {
		return "", fmt.Errorf("key pair %s: %w: it does not exist", name, ErrNotHandedOff)
	}
	if o.PublicKey == "" {
		return "", fmt.Errorf("key pair %s does not exist: give --public-key with the public half of a key you keep (the master never needs the private key)", name)
	}
	if _, err := o.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
		KeyName: aws.String(name), PublicKeyMaterial: []byte(strings.TrimSpace(o.PublicKey)),
		TagSpecifications: []types.TagSpecification{o.labels().Spec(types.ResourceTypeKeyPair, RoleMaster, name)},
	}); err != nil {
		return "", fmt.Errorf("importing key pair %s: %w", name, err)
	}
	res.Created = append(res.Created, "key pair "+name)
	return name, nil
}

// securityGroup makes sure the worker's group exists: no inbound rules,
// as the worker only connects out.
func (o Options) securityGroup(ctx context.Context, vpc string, res *Result) (string, error) {
	name := iam.Name(o.Worker)
	out, err := o.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
		{Name: aws.String("group-name"), Values: []string{name}},
		{Name: aws.String("vpc-id"), Values: []string{vpc}},
	}})
	if err != nil {
		return "", fmt.Errorf("describing security group %s: %w", name, err)
	}
	if len(out.SecurityGroups) > 0 {
		return aws.ToString(out.SecurityGroups[0].GroupId), nil
	}
	if o.CheckOnly {
		return "", fmt.Errorf("security group %s: %w: it does not exist", name, ErrNotHandedOff)
	}
	cr, err := o.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String(name), VpcId: aws.String(vpc),
		Description:       aws.String("buildbot latent worker " + o.Worker + ": no inbound rules, the worker only connects out"),
		TagSpecifications: []types.TagSpecification{o.labels().Spec(types.ResourceTypeSecurityGroup, RoleMaster, name)},
	})
	if err != nil {
		return "", fmt.Errorf("creating security group %s: %w", name, err)
	}
	id := aws.ToString(cr.GroupId)
	res.Created = append(res.Created, "security group "+id)
	return id, nil
}

// keys creates, reuses, rotates or retires the user's access keys.
func (o Options) keys(ctx context.Context, m *iam.Manager, u iam.User, b *Bundle, res *Result) error {
	if o.CheckOnly && (o.Rotate || o.RetireOld) {
		return errors.New("a check changes no key: no --rotate or --retire-old")
	}
	if o.RetireOld {
		retired, err := m.RetireOld(ctx, u, "")
		if err != nil {
			return err
		}
		res.Retired = retired
	}
	have, err := m.Keys(ctx, u)
	if err != nil {
		return err
	}
	switch {
	case o.Rotate:
		r, err := m.Rotate(ctx, u)
		if err != nil {
			return err
		}
		b.AccessKeyID, b.SecretAccessKey = r.New.ID, r.New.Secret
		b.Changes.OldAccessKeyID = r.Old.ID
		return o.storeSecret(ctx, u, *b)
	case len(have) == 0 && o.CheckOnly:
		return fmt.Errorf("the access keys of %s: %w: it has none", u.Name, ErrNotHandedOff)
	case len(have) == 0:
		k, err := m.CreateKey(ctx, u)
		if err != nil {
			return err
		}
		b.AccessKeyID, b.SecretAccessKey = k.ID, k.Secret
		return o.storeSecret(ctx, u, *b)
	default:
		// The admins have the secret already; AWS never shows it again.
		newest := have[0]
		for _, k := range have[1:] {
			if k.Created.After(newest.Created) {
				newest = k
			}
		}
		b.AccessKeyID = newest.ID
	}
	return nil
}

// checkKeys finds, before anything is created or changed, what the keys
// step would refuse: a secret asked for (WantNewSecret) when no new key
// would be made, a rotation without a key to rotate or without a free
// slot.
func (o Options) checkKeys(ctx context.Context, m *iam.Manager) error {
	name := iam.Name(o.Worker) + m.UserSuffix
	if _, err := o.IAM.GetUser(ctx, &awsiam.GetUserInput{UserName: aws.String(name)}); awserr.Code(err) == "NoSuchEntity" {
		if o.Rotate {
			return fmt.Errorf("--rotate: IAM user %s does not exist yet: %w to rotate (a first handoff makes one)", name, iam.ErrNoKey)
		}
		return nil // a first handoff: a new key, a new secret
	} else if err != nil {
		return fmt.Errorf("getting IAM user %s: %w", name, err)
	}
	have, err := m.Keys(ctx, iam.User{Name: name})
	if err != nil {
		return err
	}
	left := len(have)
	if o.RetireOld && left > 1 {
		left = 1
	}
	switch {
	case o.RetireOld && len(have) < 2:
		return fmt.Errorf("--retire-old: IAM user %s has %d access key(s), %w to retire", name, len(have), iam.ErrNoKey)
	case o.Rotate && left == 0:
		return fmt.Errorf("--rotate: IAM user %s has %w to rotate (a handoff without --rotate makes one)", name, iam.ErrNoKey)
	case o.Rotate && left >= iam.MaxKeys:
		return &iam.KeySlotsFullError{User: name, Keys: have}
	case o.WantNewSecret && !o.Rotate && left > 0:
		return fmt.Errorf("%w: IAM user %s has the access key %s, and AWS shows a secret only once, so there is none to show or encrypt (the admins keep the one they have); --rotate makes a new key and secret (the old key stays active until --retire-old)", ErrNoNewSecret, name, have[len(have)-1].ID)
	}
	return nil
}

// storeSecret hands the bundle of a new key to StoreSecret; when that
// fails, the key is deleted again.
func (o Options) storeSecret(ctx context.Context, u iam.User, b Bundle) error {
	if o.StoreSecret == nil {
		return nil
	}
	serr := o.StoreSecret(b)
	if serr == nil {
		return nil
	}
	_, err := o.IAM.DeleteAccessKey(context.WithoutCancel(ctx), &awsiam.DeleteAccessKeyInput{UserName: aws.String(u.Name), AccessKeyId: aws.String(b.AccessKeyID)})
	if err != nil {
		return fmt.Errorf("%w: %w; deleting the new access key %s failed too (%v): delete it with: aws iam delete-access-key --user-name %s --access-key-id %s",
			ErrSecretNotStored, serr, b.AccessKeyID, err, u.Name, b.AccessKeyID)
	}
	return fmt.Errorf("%w: %w; the new access key %s was deleted again: nobody would have had its secret", ErrSecretNotStored, serr, b.AccessKeyID)
}

func tagValue(tags []types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// vcpus returns the default vCPUs of instance type t, the parallelism the
// handoff gives the admins (Bundle.ParallelTests); 0 when EC2 does not say
// (the bundle then says it is unknown).
func (o Options) vcpus(ctx context.Context, t string) int {
	out, err := o.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(t)}})
	if err != nil || len(out.InstanceTypes) == 0 || out.InstanceTypes[0].VCpuInfo == nil {
		return 0
	}
	return int(aws.ToInt32(out.InstanceTypes[0].VCpuInfo.DefaultVCpus))
}
