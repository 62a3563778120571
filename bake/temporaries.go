package bake

// The run's temporary resources: the SSH key pair and the security group.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/platform"
)

// newKey generates a temporary key of the platform's type: ed25519, or RSA
// 3072 where EC2 accepts nothing else (Windows).
func newKey(t platform.KeyType) (ssh.Signer, error) {
	var priv any
	var err error
	switch t {
	case platform.Ed25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case platform.RSA:
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, fmt.Errorf("unknown key type %q", t)
	}
	if err != nil {
		return nil, fmt.Errorf("generating the temporary %s key: %w", t, err)
	}
	return ssh.NewSignerFromKey(priv)
}

func tempKey(ctx context.Context, s *State) error {
	signer, err := newKey(s.Platform.KeyType)
	if err != nil {
		return fmt.Errorf("temporary key: %w", err)
	}
	s.Signer = signer
	s.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	name := fleet.TempName(s.RunID)
	out, err := s.opts.EC2.ImportKeyPair(s.creating(ctx), &ec2.ImportKeyPairInput{
		KeyName:           aws.String(name),
		PublicKeyMaterial: []byte(s.PublicKey),
		TagSpecifications: []types.TagSpecification{s.keyPairSpec(name)},
	})
	var id string
	switch {
	case awserr.Code(err) == "InvalidKeyPair.Duplicate":
		// The import took effect but its answer was lost, and the SDK's
		// retry found the key: adopt it if it is this run's.
		if id, err = s.adoptKeyPair(ctx, name); err != nil {
			return fmt.Errorf("importing key pair %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("importing key pair %s: %w", name, err)
	default:
		id = aws.ToString(out.KeyPairId)
	}
	s.KeyName, s.KeyPairID = name, id
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.createCancels = append(s.createCancels, cancel)
	go s.renewLease(lctx, id)
	s.undo.push(KindTemp, "key pair", name, s.cmd("delete-key-pair --key-name %s", name), func(ctx context.Context) error {
		_, err := s.opts.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)})
		if awserr.NotFound(err) {
			return nil
		}
		return err
	})
	return nil
}

func securityGroup(ctx context.Context, s *State) error {
	name := fleet.TempName(s.RunID)
	in := &ec2.CreateSecurityGroupInput{
		GroupName:         aws.String(name),
		Description:       aws.String("latentworker bake " + s.RunID + ": SSH from " + s.SSHCIDR),
		TagSpecifications: []types.TagSpecification{s.labels.Spec(types.ResourceTypeSecurityGroup, fleet.RoleTempSG, name)},
	}
	// Outside a default VPC a group must name its VPC; the builder's
	// subnet's is the one (preflight found it).
	if s.Network.VpcID != "" {
		in.VpcId = aws.String(s.Network.VpcID)
	}
	out, err := s.opts.EC2.CreateSecurityGroup(s.creating(ctx), in)
	var id string
	switch {
	case awserr.Code(err) == "InvalidGroup.Duplicate":
		if id, err = s.adoptSecurityGroup(ctx, name, aws.ToString(in.VpcId)); err != nil {
			return fmt.Errorf("creating security group %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("creating security group %s: %w", name, err)
	default:
		id = aws.ToString(out.GroupId)
	}
	s.SecurityGroupID = id
	// The group lives as long as the builder: AWS refuses to delete a
	// group an instance (even a stopped one) still uses. A resume has no
	// builder: its group is a temporary.
	kind := KindBuilder
	if s.opts.Resume != "" {
		kind = KindTemp
	}
	s.undo.push(kind, "security group", id, s.cmd("delete-security-group --group-id %s", id), func(ctx context.Context) error {
		// The group may still be attached to an instance shutting down.
		return poll(ctx, s.opts.Timeouts.Poll, func() (bool, error) {
			_, err := s.opts.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			switch {
			case err == nil, awserr.NotFound(err):
				return true, nil
			case awserr.Code(err) == "DependencyViolation":
				return false, nil
			}
			return false, err
		})
	})
	// A new group may be NotFound for a while (eventual consistency); a
	// rule that exists already (a retry after a lost answer) is fine.
	err = s.whileNotFound(ctx, func() error {
		_, err := s.opts.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId:       aws.String(id),
			IpPermissions: []types.IpPermission{sshPermission(s.SSHCIDR, s.Platform.SSHPort)},
		})
		return err
	})
	if err != nil && awserr.Code(err) != "InvalidPermission.Duplicate" {
		return fmt.Errorf("allowing SSH from %s in security group %s: %w", s.SSHCIDR, id, err)
	}
	return nil
}

// sshPermission allows SSH from cidr: an IPv4 prefix in IpRanges, an IPv6
// one in Ipv6Ranges (EC2 refuses it in CidrIp).
func sshPermission(cidr string, port int) types.IpPermission {
	p := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(port)), ToPort: aws.Int32(int32(port))}
	if pfx, err := netip.ParsePrefix(cidr); err == nil && pfx.Addr().Is6() {
		p.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String(cidr), Description: aws.String("latentworker SSH")}}
	} else {
		p.IpRanges = []types.IpRange{{CidrIp: aws.String(cidr), Description: aws.String("latentworker SSH")}}
	}
	return p
}

// The run's lease, on its temporary key pair (fleet.TagLease): renewed every
// leaseRenew to leaseTerm ahead while the run lives, so that a sweep never
// touches a live run's resources, however long it takes, and finds a
// killed run's once its lease has ended.
const (
	leaseTerm  = 10 * time.Minute
	leaseRenew = 2 * time.Minute
)

// keyPairSpec tags the temporary key pair, with the run's first lease.
func (s *State) keyPairSpec(name string) types.TagSpecification {
	spec := s.labels.Spec(types.ResourceTypeKeyPair, fleet.RoleTempKey, name)
	spec.Tags = append(spec.Tags, types.Tag{Key: aws.String(fleet.TagLease), Value: aws.String(s.now().Add(leaseTerm).UTC().Format(time.RFC3339))})
	return spec
}

// renewLease keeps the key pair's lease ahead of now until ctx ends. A
// failed renewal is retried at the next tick; the term leaves room for
// several.
func (s *State) renewLease(ctx context.Context, keyPairID string) {
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lease := s.now().Add(leaseTerm).UTC().Format(time.RFC3339)
		_, err := s.opts.EC2.CreateTags(ctx, &ec2.CreateTagsInput{
			Resources: []string{keyPairID},
			Tags:      []types.Tag{{Key: aws.String(fleet.TagLease), Value: aws.String(lease)}},
		})
		if err != nil && ctx.Err() == nil {
			s.warn("", fmt.Sprintf("renewing the run's lease on key pair %s: %v (retried in %s)", keyPairID, err, leaseRenew))
		}
	}
}
