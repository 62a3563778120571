// Package iam owns the least-privilege identity latentworker hands to the
// buildmaster admins: the IAM policy documents (pure functions of the
// handed-off options, golden-tested) and the lifecycle of the worker's IAM
// user, its policy (a customer managed policy attached to the user: the
// scoped document is too large for IAM's 2,048-character inline budget
// per user), its access keys (create, rotate, retire the old
// one) and its dedicated instance profile and role. It does not render or
// encrypt the bundle the admins receive (package handoff does), it does
// not create the key pair or security group the master names (handoff
// does), and it makes no EC2 call.
//
// # What EC2LatentWorker calls
//
// Read from buildbot 3.7's buildbot/worker/ec2.py (Debian's
// python3-buildbot), class EC2LatentWorker, boto3 resource calls mapped to
// the EC2 API actions they send:
//
//	__init__ (every master start, checkconfig included):
//	  ec2.KeyPair(keypair_name).load()           DescribeKeyPairs
//	      on InvalidKeyPair.NotFound: create_key_pair  CreateKeyPair (not granted:
//	      handoff makes sure the key pair exists)
//	  security_name= only: describe_security_groups(GroupNames=)  DescribeSecurityGroups
//	      on InvalidGroup.NotFound: create_security_group  CreateSecurityGroup
//	      (not granted: handoff creates the group; with subnet_id= the snippet
//	      uses security_group_ids=, and this call is not made)
//	  ami=: ec2.Image(ami)                       none (a lazy resource, never loaded)
//	  valid_ami_owners=/valid_ami_location_regex=: get_image() ->
//	      ec2.images.all()/.filter(Owners=)      DescribeImages
//	  elastic_ip=: describe_addresses(PublicIps=)  DescribeAddresses;
//	      ec2.VpcAddress(allocation_id)          none (lazy)
//	  boto3.Session(...).get_available_regions   none (botocore's local data)
//	start_instance -> _start_instance (on demand):
//	  get_image()                                DescribeImages (AMI filters only)
//	  ec2.create_instances(ImageId, KeyName, InstanceType, SubnetId,
//	      SecurityGroupIds, IamInstanceProfile={Name}, BlockDeviceMappings,
//	      Placement, UserData)                   RunInstances (no TagSpecifications)
//	  _wait_for_instance: instance.reload()      DescribeInstances (while pending)
//	      instance.console_output()              GetConsoleOutput
//	      elastic_ip.associate(InstanceId=)      AssociateAddress (elastic_ip=)
//	      _attach_volumes: Volume.attach_to_instance  AttachVolume (volumes=)
//	      instance.create_tags(Tags=)            CreateTags (tags=, after launch)
//	start_instance -> _request_spot_instance (spot_instance=True):
//	  _bid_price_from_spot_price_history         DescribeSpotPriceHistory
//	      (unless price_multiplier=None)
//	  request_spot_instances(LaunchSpecification=...)  RequestSpotInstances
//	      (its ImageId is the ami= argument: spot needs ami=, not AMI filters)
//	  _thd_wait_for_request:
//	      describe_spot_instance_requests        DescribeSpotInstanceRequests
//	      cancel_spot_instance_requests          CancelSpotInstanceRequests
//	      (price too low or failed request)
//	  ec2.Instance(id) then _wait_for_instance   DescribeInstances, then as above
//	stop_instance -> _stop_instance:
//	  elastic_ip.association.delete()            DescribeAddresses (loads the
//	      VpcAddress), DisassociateAddress (elastic_ip=)
//	  instance.reload()                          DescribeInstances (and while waiting)
//	  instance.terminate()                       TerminateInstances
//
// IamInstanceProfile in RunInstances or RequestSpotInstances needs
// iam:PassRole on the profile's role. WorkerPolicy grants exactly these
// actions for the options handed off, plus DescribeImages and
// DescribeSecurityGroups always (read-only; they keep an AMI-filter or
// security_name= snippet working). It never grants CreateKeyPair,
// CreateSecurityGroup, any Delete*, Stop/Start, or any IAM call but
// PassRole.
//
// # How the policy is scoped
//
// Every EC2 statement carries aws:RequestedRegion = the region. Describe*
// calls cannot be scoped to resources, so they are allowed on "*" in the
// region. RunInstances (and RequestSpotInstances, which EC2 also
// authorizes against the launch resources) is allowed only on the worker's
// image ARNs (arn:PARTITION:ec2:REGION::image/ami-...), its key pair,
// security group and subnet, any new network interface and volume in the
// region, and instance/* only when ec2:InstanceType is one of the handed-off
// types and ec2:InstanceProfile is the worker's dedicated profile.
//
// TerminateInstances, GetConsoleOutput, CreateTags (and AssociateAddress,
// AttachVolume on the instance side) are allowed only on instances whose
// ec2:InstanceProfile is that profile. We chose the instance profile over
// tags because EC2LatentWorker launches without TagSpecifications and tags
// afterwards: a tag-on-create condition (aws:RequestTag on RunInstances)
// would deny every launch, and a resource-tag condition on
// TerminateInstances would need CreateTags on untagged instances, which
// would let the key tag, and then terminate, any instance in the region.
// The instance profile is fixed at launch, and RunInstances is allowed only
// with it, so "has the worker profile" means "launched by this worker".
// iam:PassRole is allowed for the worker's role only, only to
// ec2.amazonaws.com and only for instances in the region
// (iam:AssociatedResourceARN; IAM is a global service, so
// aws:RequestedRegion is not used on PassRole). The role has a trust policy
// for EC2 and no permissions at all: instances get credentials that can do
// nothing. When Tags are handed off, CreateTags may set exactly those keys
// to those values (aws:TagKeys, aws:RequestTag): the snippet's tags= must
// then be exactly PolicyOptions.Tags, or the master's CreateTags after
// launch is denied and the instance fails to substantiate.
//
// Limits of this scoping, by design or by AWS:
//   - Any principal that may pass the worker's role, or associate its
//     instance profile (AssociateIamInstanceProfile,
//     ReplaceIamInstanceProfileAssociation), can make an instance the
//     worker's key may terminate. Only account administrators can.
//   - DescribeInstances, DescribeImages and the other Describe* calls see
//     the whole region; that is how EC2 works.
//   - The key may launch as many instances of the allowed types as the
//     account's quotas permit; IAM cannot count. Use a service quota or a
//     budget alarm to bound the cost.
//   - Any new network interface and volume in the region are allowed at
//     launch (they are created by it; their IDs are unknown beforehand).
//     Encrypted AMIs with a customer KMS key would also need kms:* grants,
//     which are not given.
//   - Spot: EC2 fulfils requests with its service-linked role
//     AWSServiceRoleForEC2Spot, which must already exist in the account;
//     the worker's key cannot create it.
//   - The elastic IP statement lets the key move that one address between
//     network interfaces of the region.
//   - A new instance profile takes some seconds to be usable by EC2; the
//     first launch right after EnsureInstanceProfile may fail with an
//     invalid profile error.
//
// moto_server checks actions only: it ignores conditions and denies
// resource-scoped allows (LAB-NOTES). The lab decides the requests of keys
// like the worker's with a real IAM evaluator instead (lab/iameval), so
// the policy is tested as handed off; Document.ActionLevel, the
// action-only projection, is left for tests against moto alone.
package iam
