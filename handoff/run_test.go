package handoff

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/iam"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// motoHandoff is a handoff's clients against a moto_server of the test's
// own, and a way to make the worker's AMIs as bake leaves them.
type motoHandoff struct {
	o   Options
	ec2 *ec2.Client
}

func newMotoHandoff(t *testing.T, worker string) *motoHandoff {
	t.Helper()
	url := mototest.Start(t)
	creds := credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", testSecret, "")
	api := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds})
	return &motoHandoff{ec2: api, o: Options{
		Worker: worker, MasterAddress: "config.example.org:9989", Region: "us-east-1", InstanceTypes: []string{"t3.small"},
		NamePrefix: "latentworker",
		PublicKey:  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkLFV3cQtbfeE3LRFhQUIQzu0RgBr2iiCNgMVm0jU10 owner@example.org\n",
		EC2:        api, IAM: awsiam.New(awsiam.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds}),
		STS: sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds}),
	}}
}

// image makes an AMI of the worker named for at, tagged as bake tags its
// image (master baked in: master) plus extra.
func (m *motoHandoff) image(t *testing.T, at time.Time, master string, extra map[string]string) string {
	t.Helper()
	name := fleet.AMIName("latentworker", m.o.Worker, at)
	tags := fleet.Labels{RunID: fleet.NewRunID(), Worker: m.o.Worker, Master: master}.Map(fleet.RoleImage, name)
	maps.Copy(tags, extra)
	return mototest.Image(t, m.ec2, name, tags)
}

// TestNewKeyStoredOrDeleted: a new access key's secret goes to StoreSecret
// the moment the key exists; when it cannot be stored the key is deleted
// again, so no key exists whose secret nobody has (case 6 of issue 21),
// and the next handoff makes a new one. A handoff asked for a new secret
// that would make none is ErrNoNewSecret.
func TestNewKeyStoredOrDeleted(t *testing.T) {
	m := newMotoHandoff(t, "lw-store")
	ctx := context.Background()
	m.image(t, time.Now(), "baked.example.org:9020", map[string]string{fleet.TagReady: time.Now().UTC().Format(time.RFC3339)})
	full := errors.New("disk full")
	o := m.o
	o.StoreSecret = func(b Bundle) error {
		if b.SecretAccessKey.IsZero() {
			t.Error("StoreSecret got a bundle without the secret")
		}
		return full
	}
	_, err := Run(ctx, o)
	if !errors.Is(err, ErrSecretNotStored) || !errors.Is(err, full) {
		t.Fatalf("handoff whose secret cannot be stored = %v; want ErrSecretNotStored wrapping the cause", err)
	}
	u := iam.User{Name: iam.Name(o.Worker)}
	if keys, err := iam.NewManager(o.IAM).Keys(ctx, u); err != nil || len(keys) != 0 {
		t.Fatalf("after the secret could not be stored: keys %v, %v; want none", keys, err)
	}
	var stored []string
	o.StoreSecret = func(b Bundle) error { stored = append(stored, b.AccessKeyID); return nil }
	res, err := Run(ctx, o)
	if err != nil || len(stored) != 1 || stored[0] != res.Bundle.AccessKeyID || res.Bundle.SecretAccessKey.IsZero() {
		t.Fatalf("the next handoff = %v, stored %v; want one new key, stored", err, stored)
	}
	o.WantNewSecret = true
	if _, err := Run(ctx, o); !errors.Is(err, ErrNoNewSecret) {
		t.Errorf("a secret asked for with the key reused = %v; want ErrNoNewSecret", err)
	}
	o.Rotate = true
	if res, err := Run(ctx, o); err != nil || len(stored) != 2 || res.Bundle.Changes.OldAccessKeyID != stored[0] {
		t.Errorf("--rotate with a secret asked for = %v, stored %v; want the new key stored", err, stored)
	}
}
