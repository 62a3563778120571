package bake

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// A root volume smaller than the base image's snapshot is refused before
// the launch (EC2 would refuse the launch, InvalidBlockDeviceMapping).
func TestCheckRootVolume(t *testing.T) {
	base := &types.Image{ImageId: aws.String("ami-1"), BlockDeviceMappings: []types.BlockDeviceMapping{
		{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(64)}},
	}}
	if err := checkRootVolume(base, "/dev/xvda", 30); !errors.Is(err, ErrRootVolume) || !strings.Contains(err.Error(), "image.root_volume_gib") || !strings.Contains(err.Error(), "64") {
		t.Errorf("checkRootVolume(64 GiB snapshot, 30) = %v; want ErrRootVolume naming image.root_volume_gib and 64", err)
	}
	if err := checkRootVolume(base, "/dev/xvda", 64); err != nil {
		t.Errorf("checkRootVolume(64, 64) = %v", err)
	}
}

// The launch carries the network: a subnet and group, or a network
// interface that asks for a public IP; an IPv6 address when asked; and
// the address dialled is the one the mode says.
func TestLaunchNetwork(t *testing.T) {
	plain := &ec2.RunInstancesInput{}
	Network{SubnetID: "subnet-1"}.launchNetwork(plain, "sg-1")
	if aws.ToString(plain.SubnetId) != "subnet-1" || plain.SecurityGroupIds[0] != "sg-1" || plain.NetworkInterfaces != nil {
		t.Errorf("plain launch = %+v", plain)
	}
	public := &ec2.RunInstancesInput{}
	Network{SubnetID: "subnet-1", AssociatePublicIP: true, AssignIPv6: true}.launchNetwork(public, "sg-1")
	ni := public.NetworkInterfaces
	if public.SubnetId != nil || len(ni) != 1 || !aws.ToBool(ni[0].AssociatePublicIpAddress) || aws.ToString(ni[0].SubnetId) != "subnet-1" || ni[0].Groups[0] != "sg-1" || aws.ToInt32(ni[0].Ipv6AddressCount) != 1 {
		t.Errorf("launch asking for a public IP = %+v", public)
	}
	in := types.Instance{PublicIpAddress: aws.String("203.0.113.7"), PrivateIpAddress: aws.String("10.0.0.7"), Ipv6Address: aws.String("2001:db8::7")}
	for _, tc := range []struct {
		n    Network
		want string
	}{{Network{}, "203.0.113.7"}, {Network{Private: true}, "10.0.0.7"}, {Network{IPv6: true}, "2001:db8::7"}} {
		if got := tc.n.addressOf(in); got != tc.want {
			t.Errorf("%+v.addressOf = %q; want %q", tc.n, got, tc.want)
		}
	}
	if p := sshPermission("2001:db8::/48", 22); len(p.Ipv6Ranges) != 1 || len(p.IpRanges) != 0 {
		t.Errorf("sshPermission(IPv6) = %+v; want it in Ipv6Ranges", p)
	}
	if p := sshPermission("203.0.113.7/32", 22); len(p.IpRanges) != 1 || len(p.Ipv6Ranges) != 0 {
		t.Errorf("sshPermission(IPv4) = %+v; want it in IpRanges", p)
	}
}

func TestSimulationSource(t *testing.T) {
	for _, tc := range []struct{ caller, want string }{
		{"arn:aws:iam::012345678901:user/baker", "arn:aws:iam::012345678901:user/baker"},
		{"arn:aws:sts::012345678901:assumed-role/Baker/session-1", "arn:aws:iam::012345678901:role/Baker"},
		{"arn:aws-cn:sts::012345678901:assumed-role/Baker/s", "arn:aws-cn:iam::012345678901:role/Baker"},
		{"arn:aws:iam::012345678901:root", ""},
		{"arn:aws:sts::012345678901:federated-user/bob", ""},
	} {
		got, err := SimulationSource(tc.caller)
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrCannotSimulate) {
			t.Errorf("SimulationSource(%q) = %q, %v; want %q", tc.caller, got, err, tc.want)
		}
	}
}
