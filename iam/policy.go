package iam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/latentworker/latentworker/field"
	"github.com/latentworker/latentworker/fleet"
)

// PolicyVersion is the only IAM policy language version latentworker writes.
const PolicyVersion = "2012-10-17"

// Document is an IAM policy document. Marshalled with JSON it is
// deterministic: statements keep their order, and condition maps are
// written with sorted keys (encoding/json sorts map keys).
type Document struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a Document. Action and Resource are always
// lists, even of one element, so that golden files diff cleanly.
type Statement struct {
	Sid       string              `json:"Sid,omitempty"`
	Effect    string              `json:"Effect"`
	Principal map[string][]string `json:"Principal,omitempty"`
	Action    []string            `json:"Action"`
	Resource  []string            `json:"Resource,omitempty"`
	Condition Condition           `json:"Condition,omitempty"`
}

// Condition maps a condition operator to keys and their allowed values, as
// in {"StringEquals": {"aws:RequestedRegion": ["eu-west-1"]}}.
type Condition map[string]map[string][]string

// with returns a copy of c with op/key set to values.
func (c Condition) with(op, key string, values ...string) Condition {
	out := make(Condition, len(c)+1)
	for k, v := range c {
		out[k] = maps.Clone(v)
	}
	if out[op] == nil {
		out[op] = map[string][]string{}
	}
	out[op][key] = values
	return out
}

// JSON returns d as indented JSON with a final newline: the form written
// to golden files and sent to IAM.
func (d Document) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshalling policy document: %w", err)
	}
	return append(b, '\n'), nil
}

// Actions returns every action the document allows, sorted and without
// duplicates.
func (d Document) Actions() []string {
	var a []string
	for _, s := range d.Statement {
		if s.Effect == "Allow" {
			a = append(a, s.Action...)
		}
	}
	slices.Sort(a)
	return slices.Compact(a)
}

// ActionLevel returns a document that allows the same actions as d on every
// resource and without conditions. It is weaker than d and exists for
// moto's IAM enforcement, which ignores conditions and wrongly denies
// resource-scoped allows (see LAB-NOTES): a lab that turns enforcement on
// attaches ActionLevel() to check that the master calls nothing outside
// the policy's actions (the lab itself now evaluates policies as AWS does,
// with lab/iameval). Never hand it to AWS.
func (d Document) ActionLevel() Document {
	return Document{Version: PolicyVersion, Statement: []Statement{{
		Sid:      "ActionLevelOnly",
		Effect:   "Allow",
		Action:   d.Actions(),
		Resource: []string{"*"},
	}}}
}

// PolicyOptions are the EC2LatentWorker options handed off to the
// buildmaster admins: the policy allows what those options need, and
// nothing else.
type PolicyOptions struct {
	// Region is the full region name, e.g. "eu-west-1". Every statement
	// is limited to it.
	Region string
	// AccountID is the 12-digit AWS account that owns the resources.
	AccountID string
	// AMIs are the worker's image IDs RunInstances may launch (after a
	// refresh: the new one; during a switch-over: both).
	AMIs []string
	// FindNewest, for a master that finds the worker's newest AMI by
	// itself (EC2LatentWorker's valid_ami_owners and
	// valid_ami_location_regex), lets RunInstances launch any image owned
	// by AccountID and tagged for Worker as a completed bake's image
	// (fleet.TagWorker, fleet.TagRole "image", fleet.TagReady), in
	// addition to AMIs, which may then be empty: a refresh needs no new
	// policy.
	FindNewest bool
	// Worker is the worker name the images are tagged for (required with
	// FindNewest).
	Worker string
	// InstanceTypes are the types RunInstances may launch, e.g. "t3.small".
	InstanceTypes []string
	// KeyPair is the name of the EC2 key pair the master names
	// (keypair_name=).
	KeyPair string
	// SecurityGroupID is the group the instances run in
	// (security_group_ids=).
	SecurityGroupID string
	// SubnetID is the subnet the instances run in (subnet_id=).
	SubnetID string
	// InstanceProfileARN is the worker's dedicated instance profile
	// (instance_profile_name= names it), and RoleARN the role in it: see
	// the package documentation for why they are required.
	InstanceProfileARN string
	RoleARN            string
	// Spot allows spot requests (spot_instance=True).
	Spot bool
	// ElasticIPAllocation is the allocation ID ("eipalloc-...") of the
	// elastic IP (elastic_ip=) the master associates with each instance;
	// "" for none.
	ElasticIPAllocation string
	// Volumes are the IDs ("vol-...") of the EBS volumes (volumes=) the
	// master attaches to each instance; nil for none.
	Volumes []string
	// KMSKeys are the ARNs of the customer managed KMS keys, of Region,
	// that encrypt the AMIs' snapshots: the master's key may use them
	// through EC2 only (KMSStatements). nil for none (unencrypted, or the
	// AWS managed key aws/ebs, whose key policy already allows EC2).
	KMSKeys []string
	// Tags are the tags (tags=) the master puts on each instance after
	// launch. When not empty, CreateTags may set exactly these keys to
	// these values; when empty, CreateTags is still allowed on the
	// worker's own instances, with any tags.
	Tags map[string]string
}

// SidFindNewest is the statement of a FindNewest policy that lets the key
// launch the worker's completed images.
const SidFindNewest = "LaunchOnlyTheAccountsReadyImagesOfTheWorker"

// FieldError is a problem with one field of PolicyOptions ("AMIs[1]").
type FieldError = field.Error

var (
	regionRE       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	accountRE      = regexp.MustCompile(`^[0-9]{12}$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)
	// keyPairRE: EC2 allows any ASCII in key names; we refuse the
	// characters that would change an ARN or a wildcard match.
	keyPairRE = regexp.MustCompile(`^[A-Za-z0-9 ._+=,@:/-]{1,255}$`)
	tagKeyRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
	iamARNRE  = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}):(role|instance-profile)(/[\x21-\x7e]*)?/[\w+=,.@-]{1,128}$`)
)

// idRE matches an EC2 ID with prefix and 8 or 17 hex digits.
func idRE(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + prefix + `-([0-9a-f]{8}|[0-9a-f]{17})$`)
}

var (
	amiRE      = idRE("ami")
	sgRE       = idRE("sg")
	subnetRE   = idRE("subnet")
	eipallocRE = idRE("eipalloc")
	volumeRE   = idRE("vol")
	kmsKeyRE   = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):kms:([a-z0-9-]+):[0-9]{12}:key/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
)

// Partition returns the ARN partition of region: "aws-cn" for China,
// "aws-us-gov" for GovCloud, "aws" otherwise.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// DNSSuffix is the domain of partition's service endpoints:
// amazonaws.com.cn in China, amazonaws.com elsewhere. kms:ViaService names
// an endpoint (ec2.cn-north-1.amazonaws.com.cn).
func DNSSuffix(partition string) string {
	if partition == "aws-cn" {
		return "amazonaws.com.cn"
	}
	return "amazonaws.com"
}

// EC2Principal is EC2's service principal in partition, for a trust policy
// and iam:PassedToService: ec2.amazonaws.com.cn in China (EC2 kept the
// endpoint domain there, where later services use amazonaws.com).
func EC2Principal(partition string) string { return "ec2." + DNSSuffix(partition) }

// Validate checks o and returns every problem at once, each a *FieldError
// naming the field, joined with errors.Join.
func (o PolicyOptions) Validate() error {
	var errs []error
	bad := func(field, value, problem string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Rule: problem})
	}
	check := func(field, value string, re *regexp.Regexp, problem string) {
		if !re.MatchString(value) {
			bad(field, value, problem)
		}
	}
	check("Region", o.Region, regionRE, `not a region name such as "eu-west-1"`)
	check("AccountID", o.AccountID, accountRE, "not a 12-digit AWS account ID")
	if len(o.AMIs) == 0 && !o.FindNewest {
		bad("AMIs", "", "at least one AMI is required (or FindNewest)")
	}
	if o.FindNewest {
		check("Worker", o.Worker, tagValRE, "not a valid tag value")
		if o.Worker == "" {
			bad("Worker", "", "required with FindNewest: the worker the images are tagged for")
		}
	}
	for i, id := range o.AMIs {
		check(fmt.Sprintf("AMIs[%d]", i), id, amiRE, "not an AMI ID (ami- and 8 or 17 hex digits)")
	}
	if len(o.InstanceTypes) == 0 {
		bad("InstanceTypes", "", "at least one instance type is required")
	}
	for i, t := range o.InstanceTypes {
		check(fmt.Sprintf("InstanceTypes[%d]", i), t, instanceTypeRE, `not an instance type such as "t3.small"`)
	}
	check("KeyPair", o.KeyPair, keyPairRE, "not a key pair name (1-255 letters, digits, spaces and ._+=,@:/-)")
	check("SecurityGroupID", o.SecurityGroupID, sgRE, "not a security group ID (sg- and 8 or 17 hex digits)")
	check("SubnetID", o.SubnetID, subnetRE, "not a subnet ID (subnet- and 8 or 17 hex digits)")
	checkIAM := func(field, arn, kind string) {
		m := iamARNRE.FindStringSubmatch(arn)
		switch {
		case m == nil || m[3] != kind:
			bad(field, arn, "not the ARN of an IAM "+kind)
		case m[2] != o.AccountID:
			bad(field, arn, "not in account "+o.AccountID)
		case regionRE.MatchString(o.Region) && m[1] != Partition(o.Region):
			bad(field, arn, "not in partition "+Partition(o.Region)+" of region "+o.Region)
		}
	}
	checkIAM("InstanceProfileARN", o.InstanceProfileARN, "instance-profile")
	checkIAM("RoleARN", o.RoleARN, "role")
	if o.ElasticIPAllocation != "" {
		check("ElasticIPAllocation", o.ElasticIPAllocation, eipallocRE, "not an elastic IP allocation ID (eipalloc- and 8 or 17 hex digits)")
	}
	for i, v := range o.Volumes {
		check(fmt.Sprintf("Volumes[%d]", i), v, volumeRE, "not a volume ID (vol- and 8 or 17 hex digits)")
	}
	for i, k := range o.KMSKeys {
		f := fmt.Sprintf("KMSKeys[%d]", i)
		switch m := kmsKeyRE.FindStringSubmatch(k); {
		case m == nil:
			bad(f, k, "not the ARN of a KMS key (arn:PARTITION:kms:REGION:ACCOUNT:key/ID)")
		case m[2] != o.Region:
			bad(f, k, "not a key of region "+o.Region)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(o.Tags)) {
		check("Tags key", k, tagKeyRE, "not a valid tag key")
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			bad("Tags key", k, `the "aws:" prefix is reserved`)
		}
		check("Tags["+k+"]", o.Tags[k], tagValRE, "not a valid tag value")
	}
	return errors.Join(errs...)
}

// sorted returns a sorted copy of s without duplicates.
func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// WorkerPolicy returns the inline policy of the worker's IAM user: exactly
// the EC2 calls EC2LatentWorker makes for o (see the package
// documentation for the mapping and the scoping), or the errors of
// o.Validate. It is a pure function: the same options give the same
// document, byte for byte.
func WorkerPolicy(o PolicyOptions) (Document, error) {
	if err := o.Validate(); err != nil {
		return Document{}, fmt.Errorf("worker policy: %w", err)
	}
	p := Partition(o.Region)
	arn := func(resource string) string {
		return fmt.Sprintf("arn:%s:ec2:%s:%s:%s", p, o.Region, o.AccountID, resource)
	}
	inRegion := Condition{}.with("StringEquals", "aws:RequestedRegion", o.Region)
	ownInstances := inRegion.with("ArnEquals", "ec2:InstanceProfile", o.InstanceProfileARN)
	// RequestSpotInstances takes no instance or volume resource (the
	// Service Authorization Reference): it gets a statement of its own.
	launch := []string{"ec2:RunInstances"}

	describe := []string{
		"ec2:DescribeImages",
		"ec2:DescribeInstances",
		"ec2:DescribeKeyPairs",
		"ec2:DescribeSecurityGroups",
	}
	if o.Spot {
		describe = append(describe, "ec2:DescribeSpotInstanceRequests", "ec2:DescribeSpotPriceHistory")
	}
	if o.ElasticIPAllocation != "" {
		describe = append(describe, "ec2:DescribeAddresses")
	}

	var launchResources []string
	for _, ami := range sorted(o.AMIs) {
		launchResources = append(launchResources, fmt.Sprintf("arn:%s:ec2:%s::image/%s", p, o.Region, ami))
	}
	launchResources = append(launchResources,
		arn("key-pair/"+o.KeyPair),
		arn("network-interface/*"),
		arn("security-group/"+o.SecurityGroupID),
		arn("subnet/"+o.SubnetID),
		arn("volume/*"),
	)

	st := []Statement{
		{
			Sid:       "DescribeInRegion",
			Effect:    "Allow",
			Action:    sorted(describe),
			Resource:  []string{"*"},
			Condition: inRegion,
		},
		{
			Sid:      "LaunchOnlyTheseTypesWithTheWorkerProfile",
			Effect:   "Allow",
			Action:   launch,
			Resource: []string{arn("instance/*")},
			Condition: ownInstances.
				with("StringEquals", "ec2:InstanceType", sorted(o.InstanceTypes)...),
		},
		{
			Sid:       "LaunchOnlyTheseImagesKeySecurityGroupAndSubnet",
			Effect:    "Allow",
			Action:    launch,
			Resource:  launchResources,
			Condition: inRegion,
		},
		{
			Sid:      "PassOnlyTheWorkerRoleToEC2",
			Effect:   "Allow",
			Action:   []string{"iam:PassRole"},
			Resource: []string{o.RoleARN},
			Condition: Condition{}.
				with("StringEquals", "iam:PassedToService", EC2Principal(p)).
				with("ArnLike", "iam:AssociatedResourceARN", arn("instance/*")),
		},
	}

	own := []string{"ec2:GetConsoleOutput", "ec2:TerminateInstances"}
	if o.ElasticIPAllocation != "" {
		own = append(own, "ec2:AssociateAddress")
	}
	if len(o.Volumes) > 0 {
		own = append(own, "ec2:AttachVolume")
	}
	st = append(st, Statement{
		Sid:       "ManageOnlyInstancesWithTheWorkerProfile",
		Effect:    "Allow",
		Action:    sorted(own),
		Resource:  []string{arn("instance/*")},
		Condition: ownInstances,
	})

	tagCond := ownInstances
	if len(o.Tags) > 0 {
		keys := slices.Sorted(maps.Keys(o.Tags))
		tagCond = tagCond.with("ForAllValues:StringEquals", "aws:TagKeys", keys...)
		for _, k := range keys {
			tagCond = tagCond.with("StringEquals", "aws:RequestTag/"+k, o.Tags[k])
		}
	}
	st = append(st, Statement{
		Sid:       "TagOnlyInstancesWithTheWorkerProfile",
		Effect:    "Allow",
		Action:    []string{"ec2:CreateTags"},
		Resource:  []string{arn("instance/*")},
		Condition: tagCond,
	})

	if o.FindNewest {
		images := []string{"ec2:RunInstances"}
		if o.Spot {
			images = append(images, "ec2:RequestSpotInstances")
		}
		st = append(st, Statement{
			Sid:      SidFindNewest,
			Effect:   "Allow",
			Action:   images,
			Resource: []string{fmt.Sprintf("arn:%s:ec2:%s::image/*", p, o.Region)},
			Condition: inRegion.
				with("StringEquals", "ec2:Owner", o.AccountID).
				with("StringEquals", "ec2:ResourceTag/"+fleet.TagWorker, o.Worker).
				with("StringEquals", "ec2:ResourceTag/"+fleet.TagRole, string(fleet.RoleImage)).
				with("Null", "ec2:ResourceTag/"+fleet.TagReady, "false"),
		})
	}
	if o.Spot {
		var spotResources []string
		for _, r := range launchResources {
			if !strings.HasSuffix(r, ":volume/*") {
				spotResources = append(spotResources, r)
			}
		}
		st = append(st, Statement{
			Sid:       "SpotOnlyTheseImagesKeySecurityGroupAndSubnet",
			Effect:    "Allow",
			Action:    []string{"ec2:RequestSpotInstances"},
			Resource:  spotResources,
			Condition: inRegion,
		}, Statement{
			Sid:       "SpotRequests",
			Effect:    "Allow",
			Action:    []string{"ec2:CancelSpotInstanceRequests", "ec2:RequestSpotInstances"},
			Resource:  []string{arn("spot-instances-request/*")},
			Condition: inRegion,
		})
	}
	if o.ElasticIPAllocation != "" {
		st = append(st, Statement{
			Sid:       "OnlyTheWorkerElasticIP",
			Effect:    "Allow",
			Action:    []string{"ec2:AssociateAddress", "ec2:DisassociateAddress"},
			Resource:  []string{arn("elastic-ip/" + o.ElasticIPAllocation), arn("network-interface/*")},
			Condition: inRegion,
		})
	}
	if len(o.Volumes) > 0 {
		var vols []string
		for _, v := range sorted(o.Volumes) {
			vols = append(vols, arn("volume/"+v))
		}
		st = append(st, Statement{
			Sid:       "AttachOnlyTheWorkerVolumes",
			Effect:    "Allow",
			Action:    []string{"ec2:AttachVolume"},
			Resource:  vols,
			Condition: inRegion,
		})
	}
	st = append(st, KMSStatements(o.Region, o.KMSKeys)...)
	return Document{Version: PolicyVersion, Statement: st}, nil
}

// KMSStatements let the master's key use the customer managed KMS keys
// (ARNs) that encrypt the worker's AMI, as EC2 needs to launch an instance
// from it, and only through EC2 in region (kms:ViaService): EC2 decrypts
// and re-encrypts the volume's data key and gives itself a grant for the
// instance's life (CreateGrant, only for an AWS resource). The actions are
// those AWS documents for a user who launches instances with encrypted
// volumes (its kms:ReEncrypt* written out: ReEncryptFrom, ReEncryptTo).
// Nothing for no keys.
func KMSStatements(region string, keys []string) []Statement {
	if len(keys) == 0 {
		return nil
	}
	via := Condition{}.with("StringEquals", "kms:ViaService", "ec2."+region+"."+DNSSuffix(Partition(region)))
	return []Statement{
		{
			Sid:       "UseTheImageKeyThroughEC2Only",
			Effect:    "Allow",
			Action:    []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"},
			Resource:  sorted(keys),
			Condition: via,
		},
		{
			Sid:       "GrantTheImageKeyToEC2Only",
			Effect:    "Allow",
			Action:    []string{"kms:CreateGrant"},
			Resource:  sorted(keys),
			Condition: via.with("Bool", "kms:GrantIsForAWSResource", "true"),
		},
	}
}

// EC2TrustPolicy is the trust (assume-role) policy of the worker's role in
// partition: only EC2 may assume it, for the instances it launches with
// the profile.
func EC2TrustPolicy(partition string) Document {
	return Document{Version: PolicyVersion, Statement: []Statement{{
		Sid:       "EC2AssumesTheWorkerRole",
		Effect:    "Allow",
		Principal: map[string][]string{"Service": {EC2Principal(partition)}},
		Action:    []string{"sts:AssumeRole"},
	}}}
}

// sameDocument reports whether the JSON documents a and b are equal once
// whitespace and key order are ignored.
func sameDocument(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	ca, _ := json.Marshal(va)
	cb, _ := json.Marshal(vb)
	return bytes.Equal(ca, cb)
}
