package iam

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"
)

// raceAPI provokes what moto cannot: another process creates a key between
// our ListAccessKeys and CreateAccessKey. Calls nobody expected panic on
// the nil embedded API.
type raceAPI struct {
	API
	lists   int
	creates int
}

func (f *raceAPI) ListAccessKeys(_ context.Context, in *awsiam.ListAccessKeysInput, _ ...func(*awsiam.Options)) (*awsiam.ListAccessKeysOutput, error) {
	f.lists++
	keys := []types.AccessKeyMetadata{{AccessKeyId: aws.String("AKIAOLD"), Status: types.StatusTypeActive, CreateDate: aws.Time(time.Unix(1, 0))}}
	if f.lists > 1 {
		keys = append(keys, types.AccessKeyMetadata{AccessKeyId: aws.String("AKIARACER"), Status: types.StatusTypeActive, CreateDate: aws.Time(time.Unix(2, 0))})
	}
	return &awsiam.ListAccessKeysOutput{AccessKeyMetadata: keys}, nil
}

func (f *raceAPI) CreateAccessKey(context.Context, *awsiam.CreateAccessKeyInput, ...func(*awsiam.Options)) (*awsiam.CreateAccessKeyOutput, error) {
	f.creates++
	return nil, &smithy.GenericAPIError{Code: "LimitExceeded", Message: "Cannot exceed quota for AccessKeysPerUser: 2"}
}

func TestCreateKeyRaceLimitExceeded(t *testing.T) {
	f := &raceAPI{}
	m := NewManager(f)
	_, err := m.CreateKey(t.Context(), User{Name: "latentworker-w1"})
	var full *KeySlotsFullError
	if !errors.As(err, &full) || len(full.Keys) != 2 || full.Keys[1].ID != "AKIARACER" {
		t.Fatalf("CreateKey after a racing create: error = %v; want *KeySlotsFullError naming AKIAOLD and AKIARACER", err)
	}
	if f.creates != 1 || f.lists != 2 {
		t.Errorf("calls: %d creates, %d lists; want 1 and 2", f.creates, f.lists)
	}
}

// sameSecondAPI lists two keys created in the same second.
type sameSecondAPI struct{ API }

func (sameSecondAPI) ListAccessKeys(context.Context, *awsiam.ListAccessKeysInput, ...func(*awsiam.Options)) (*awsiam.ListAccessKeysOutput, error) {
	t := aws.Time(time.Unix(5, 0))
	return &awsiam.ListAccessKeysOutput{AccessKeyMetadata: []types.AccessKeyMetadata{
		{AccessKeyId: aws.String("AKIAB"), CreateDate: t},
		{AccessKeyId: aws.String("AKIAA"), CreateDate: t},
	}}, nil
}

func TestRetireOldRefusals(t *testing.T) {
	m := NewManager(sameSecondAPI{})
	u := User{Name: "latentworker-w1"}
	if _, err := m.RetireOld(t.Context(), u, ""); err == nil {
		t.Error("RetireOld(keep \"\") with keys of the same second: error = nil; want a request to name the key")
	}
	if _, err := m.RetireOld(t.Context(), u, "AKIANONE"); err == nil {
		t.Error("RetireOld(keep AKIANONE) error = nil")
	}
}
