package bake

// The network: the subnet the builder runs in and the address bake
// connects to, found in preflight so that an account unlike the default
// one (no default VPC, subnets without public IPs, IPv6) is bad input
// before anything is created, not a failure after the launch.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/config"
)

// ErrNetwork is a subnet or address setting the builder cannot run or be
// reached with; the message names the key that fixes it.
var ErrNetwork = errors.New("the builder cannot run or be reached there")

// Network is where the builder runs and how bake reaches it.
type Network struct {
	SubnetID, VpcID, AvailabilityZone string
	// MapsPublicIP: the subnet gives instances a public IPv4 address.
	MapsPublicIP bool
	// AssociatePublicIP: the launch asks for one (aws.associate_public_ip).
	AssociatePublicIP bool
	// IPv6: aws.ssh_cidr is IPv6, so the builder gets an IPv6 address
	// (AssignIPv6: the launch asks for one; the subnet does not assign
	// one on its own) and bake connects to it.
	IPv6, AssignIPv6 bool
	// Private: bake connects to the private IPv4 address
	// (aws.ssh_address = "private").
	Private bool
}

// Address is what bake connects to, said for messages.
func (n Network) Address() string {
	switch {
	case n.IPv6:
		return "IPv6 address"
	case n.Private:
		return "private IPv4 address"
	}
	return "public IPv4 address"
}

// network finds the subnet the builder runs in: aws.subnet_id, or a
// default subnet of the default VPC in a zone that offers the instance
// type; and checks that bake can reach the builder there.
func (s *State) network(ctx context.Context) error {
	cfg := s.opts.Config
	n := Network{
		AssociatePublicIP: cfg.AWS.AssociatePublicIP,
		Private:           cfg.AWS.SSHAddress == config.SSHPrivate,
	}
	if p, err := netip.ParsePrefix(s.SSHCIDR); err == nil && p.Addr().Is6() {
		n.IPv6 = true
	}
	zones, err := s.offeredZones(ctx)
	if err != nil {
		return err
	}
	var sub types.Subnet
	if id := cfg.AWS.SubnetID; id != "" {
		out, err := s.opts.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}})
		if awserr.NotFound(err) || err == nil && len(out.Subnets) == 0 {
			return fmt.Errorf("%w: aws.subnet_id %s does not exist in %s", ErrNetwork, id, s.Region)
		}
		if err != nil {
			return fmt.Errorf("describing subnet %s: %w", id, err)
		}
		sub = out.Subnets[0]
		if az := aws.ToString(sub.AvailabilityZone); zones != nil && !zones[az] {
			return fmt.Errorf("%w: aws.instance_type %s is not offered in %s, the zone of aws.subnet_id %s (offered in %s): choose a subnet there or another type",
				ErrUnfitInstance, cfg.AWS.InstanceType, az, id, strings.Join(sortedKeys(zones), ", "))
		}
	} else {
		if sub, err = s.defaultSubnet(ctx, zones); err != nil {
			return err
		}
	}
	n.SubnetID, n.VpcID, n.AvailabilityZone = aws.ToString(sub.SubnetId), aws.ToString(sub.VpcId), aws.ToString(sub.AvailabilityZone)
	n.MapsPublicIP = aws.ToBool(sub.MapPublicIpOnLaunch)
	where := fmt.Sprintf("subnet %s (%s, %s)", n.SubnetID, n.VpcID, n.AvailabilityZone)
	switch {
	case n.IPv6:
		if !slices.ContainsFunc(sub.Ipv6CidrBlockAssociationSet, func(a types.SubnetIpv6CidrBlockAssociation) bool {
			return a.Ipv6CidrBlockState == nil || a.Ipv6CidrBlockState.State == types.SubnetCidrBlockStateCodeAssociated
		}) {
			return fmt.Errorf("%w: aws.ssh_cidr %s is IPv6, but %s has no IPv6 CIDR block: use a dual-stack subnet (aws.subnet_id) or an IPv4 aws.ssh_cidr", ErrNetwork, s.SSHCIDR, where)
		}
		n.AssignIPv6 = !aws.ToBool(sub.AssignIpv6AddressOnCreation)
	case !n.Private && !n.MapsPublicIP && !n.AssociatePublicIP:
		return fmt.Errorf("%w: %s gives instances no public IP address, and bake connects to the builder's public address: "+
			"set aws.associate_public_ip = true (a public IPv4 address for the builder; the subnet must route to an internet gateway), "+
			"or aws.ssh_address = \"private\" where this machine reaches the VPC's private addresses (a runner inside the VPC, a VPN, a bastion)", ErrNetwork, where)
	}
	s.Network = n
	return nil
}

// offeredZones returns the zones of the region that offer the instance
// type, or nil when the caller may not ask (then EC2 says so at launch).
func (s *State) offeredZones(ctx context.Context) (map[string]bool, error) {
	t := s.opts.Config.AWS.InstanceType
	zones := map[string]bool{}
	p := ec2.NewDescribeInstanceTypeOfferingsPaginator(s.opts.EC2, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: []string{t}}},
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if awserr.Denied(err) {
			s.warn(StepPreflight, fmt.Sprintf("not checking which zones offer %s: this caller may not ask (ec2:DescribeInstanceTypeOfferings)", t))
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("finding the zones that offer %s: %w", t, err)
		}
		for _, o := range out.InstanceTypeOfferings {
			zones[aws.ToString(o.Location)] = true
		}
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("%w: aws.instance_type %s is not offered in any zone of %s", ErrUnfitInstance, t, s.Region)
	}
	return zones, nil
}

// defaultSubnet is the default VPC's default subnet, first by zone name,
// in a zone that offers the instance type (zones; nil: any).
func (s *State) defaultSubnet(ctx context.Context, zones map[string]bool) (types.Subnet, error) {
	vpcs, err := s.opts.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil {
		return types.Subnet{}, fmt.Errorf("finding the default VPC: %w", err)
	}
	if len(vpcs.Vpcs) == 0 {
		return types.Subnet{}, fmt.Errorf("%w: aws.subnet_id is not set and %s has no default VPC (accounts of an organisation often have none): set aws.subnet_id to a subnet of your VPC%s",
			ErrNetwork, s.Region, s.someSubnets(ctx))
	}
	vpc := aws.ToString(vpcs.Vpcs[0].VpcId)
	out, err := s.opts.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpc}},
		{Name: aws.String("default-for-az"), Values: []string{"true"}},
	}})
	if err != nil {
		return types.Subnet{}, fmt.Errorf("finding the default subnets of %s: %w", vpc, err)
	}
	subs := out.Subnets
	sort.Slice(subs, func(i, j int) bool {
		return aws.ToString(subs[i].AvailabilityZone) < aws.ToString(subs[j].AvailabilityZone)
	})
	for _, sub := range subs {
		if zones == nil || zones[aws.ToString(sub.AvailabilityZone)] {
			return sub, nil
		}
	}
	if len(subs) == 0 {
		return types.Subnet{}, fmt.Errorf("%w: aws.subnet_id is not set and the default VPC %s has no default subnet: set aws.subnet_id%s", ErrNetwork, vpc, s.someSubnets(ctx))
	}
	return types.Subnet{}, fmt.Errorf("%w: aws.instance_type %s is not offered in any zone of the default VPC's subnets (offered in %s): set aws.subnet_id or choose another type",
		ErrUnfitInstance, s.opts.Config.AWS.InstanceType, strings.Join(sortedKeys(zones), ", "))
}

// someSubnets names a few of the region's subnets, for the message that
// asks for one ("" when there are none or they cannot be listed).
func (s *State) someSubnets(ctx context.Context) string {
	out, err := s.opts.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil || len(out.Subnets) == 0 {
		return ""
	}
	subs := out.Subnets
	sort.Slice(subs, func(i, j int) bool { return aws.ToString(subs[i].SubnetId) < aws.ToString(subs[j].SubnetId) })
	var names []string
	for i, sub := range subs {
		if i == 5 {
			names = append(names, fmt.Sprintf("and %d more", len(subs)-5))
			break
		}
		public := "no public IPs"
		if aws.ToBool(sub.MapPublicIpOnLaunch) {
			public = "public IPs"
		}
		names = append(names, fmt.Sprintf("%s (%s, %s, %s)", aws.ToString(sub.SubnetId), aws.ToString(sub.VpcId), aws.ToString(sub.AvailabilityZone), public))
	}
	return "; this region has " + strings.Join(names, ", ")
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// launchNetwork puts the network into a launch: the subnet and group, and
// the public or IPv6 address asked for (a network interface then carries
// them, as RunInstances requires).
func (n Network) launchNetwork(in *ec2.RunInstancesInput, group string) {
	if !n.AssociatePublicIP {
		in.SubnetId = aws.String(n.SubnetID)
		in.SecurityGroupIds = []string{group}
		if n.AssignIPv6 {
			in.Ipv6AddressCount = aws.Int32(1)
		}
		return
	}
	ni := types.InstanceNetworkInterfaceSpecification{
		DeviceIndex:              aws.Int32(0),
		SubnetId:                 aws.String(n.SubnetID),
		Groups:                   []string{group},
		AssociatePublicIpAddress: aws.Bool(true),
		DeleteOnTermination:      aws.Bool(true),
	}
	if n.AssignIPv6 {
		ni.Ipv6AddressCount = aws.Int32(1)
	}
	in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{ni}
}

// addressOf is the address of an instance bake connects to.
func (n Network) addressOf(in types.Instance) string {
	switch {
	case n.IPv6:
		if a := aws.ToString(in.Ipv6Address); a != "" {
			return a
		}
		for _, ni := range in.NetworkInterfaces {
			for _, a := range ni.Ipv6Addresses {
				if v := aws.ToString(a.Ipv6Address); v != "" {
					return v
				}
			}
		}
		return ""
	case n.Private:
		return aws.ToString(in.PrivateIpAddress)
	}
	return aws.ToString(in.PublicIpAddress)
}
