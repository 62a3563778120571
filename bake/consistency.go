package bake

// What AWS's failures ask of the steps: a create whose answer was lost is
// retried by the SDK and then answers Duplicate (the resource is adopted
// when its tags show it is this run's), and a resource just created may be
// NotFound for a while (eventual consistency).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
)

// consistencyWindow bounds how long a resource this run created may answer
// NotFound before the answer is believed. AWS documents no bound; minutes
// are what its eventual consistency takes in practice.
const consistencyWindow = 2 * time.Minute

// ErrNotOurs is returned (wrapped) when a create answers Duplicate and the
// resource of that name is not tagged with this run's ID: another run, or
// someone else, owns it.
var ErrNotOurs = errors.New("a resource of that name exists and is not this run's")

// ours reports whether tags carry this run's ID.
func (s *State) ours(tags []types.Tag) bool {
	for _, t := range tags {
		if aws.ToString(t.Key) == fleet.TagRunID && aws.ToString(t.Value) == s.RunID {
			return true
		}
	}
	return false
}

// whileNotFound calls f until it returns an error that is not NotFound (or
// nil), for at most consistencyWindow: a resource this run just created may
// not be visible yet to every API.
func (s *State) whileNotFound(ctx context.Context, f func() error) error {
	wctx, cancel := context.WithTimeout(ctx, consistencyWindow)
	defer cancel()
	var err error
	perr := poll(wctx, min(s.opts.Timeouts.Poll, time.Second), func() (bool, error) {
		err = f()
		return !awserr.NotFound(err), nil
	})
	if perr != nil && ctx.Err() != nil {
		return perr
	}
	return err
}

// adoptKeyPair returns the ID of key pair name when it is this run's.
func (s *State) adoptKeyPair(ctx context.Context, name string) (string, error) {
	var out *ec2.DescribeKeyPairsOutput
	err := s.whileNotFound(ctx, func() (err error) {
		out, err = s.opts.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("describing key pair %s: %w", name, err)
	}
	for _, kp := range out.KeyPairs {
		if aws.ToString(kp.KeyName) == name && s.ours(kp.Tags) {
			return aws.ToString(kp.KeyPairId), nil
		}
	}
	return "", fmt.Errorf("key pair %s: %w", name, ErrNotOurs)
}

// adoptSecurityGroup returns the ID of security group name (in vpc, when
// set) when it is this run's.
func (s *State) adoptSecurityGroup(ctx context.Context, name, vpc string) (string, error) {
	filters := []types.Filter{{Name: aws.String("group-name"), Values: []string{name}}}
	if vpc != "" {
		filters = append(filters, types.Filter{Name: aws.String("vpc-id"), Values: []string{vpc}})
	}
	out, err := s.opts.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: filters})
	if err != nil {
		return "", fmt.Errorf("describing security group %s: %w", name, err)
	}
	for _, g := range out.SecurityGroups {
		if s.ours(g.Tags) {
			return aws.ToString(g.GroupId), nil
		}
	}
	return "", fmt.Errorf("security group %s: %w", name, ErrNotOurs)
}

// adoptImage returns the ID of the image this account owns called name when
// it is this run's.
func (s *State) adoptImage(ctx context.Context, name string) (string, error) {
	out, err := s.opts.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{name}}},
	})
	if err != nil {
		return "", fmt.Errorf("describing image %s: %w", name, err)
	}
	for _, im := range out.Images {
		if s.ours(im.Tags) {
			return aws.ToString(im.ImageId), nil
		}
	}
	return "", fmt.Errorf("image %s: %w", name, ErrNotOurs)
}

// terminated reports, after a TerminateInstances that answered NotFound,
// whether DescribeInstances confirms instance id is gone: terminated, or
// not found once the consistency window for a new instance has passed.
func (s *State) terminated(ctx context.Context, id string, since time.Time) (bool, error) {
	out, err := s.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	switch {
	case awserr.NotFound(err):
		return time.Since(since) > consistencyWindow, nil
	case err != nil:
		return false, err
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if in.State != nil && in.State.Name == types.InstanceStateNameTerminated {
				return true, nil
			}
		}
	}
	return false, nil
}
