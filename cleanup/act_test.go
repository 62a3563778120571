package cleanup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

func TestActContinuesPastFailures(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	s := newSeeder(t, get("us-east-1"))
	now := time.Now()
	l := s.labels(runID(now, 1), "w5", now.Add(time.Hour))
	b := s.instance(s.base, "", l.Tags(fleet.RoleBuilder, "b"))
	img, snaps := s.image(l, b, fleet.AMIName("lw", "w5", now))
	if len(snaps) == 0 {
		t.Fatal("moto made an AMI without snapshots")
	}
	key := s.keyPair(l)
	rep := Report{Findings: []Finding{
		// In use by a registered AMI: DeleteSnapshot fails.
		{Region: "us-east-1", Kind: KindLeftover, Resource: ResSnapshot, ID: snaps[0]},
		// Already gone: done.
		{Region: "us-east-1", Kind: KindZombie, Resource: ResInstance, ID: "i-0123456789abcdef0"},
		{Region: "us-east-1", Kind: KindLeftover, Resource: ResKeyPair, ID: key, Name: fleet.TempName(l.RunID)},
		{Region: "us-east-1", Kind: KindLeftover, Resource: ResInstance, ID: b},
	}}
	res, err := Act(context.Background(), clients, rep)
	if len(res.Failed) != 1 || res.Failed[0].ID != snaps[0] || res.Failed[0].Op != OpDeleteSnapshot {
		t.Fatalf("Act failed %+v; want only the snapshot in use", res.Failed)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), snaps[0]) || !strings.Contains(err.Error(), "us-east-1") {
		t.Errorf("Act error = %v; want the AWS error naming the snapshot and region", err)
	} else {
		t.Logf("Act error: %v (code %s)", err, ae.ErrorCode())
	}
	if len(res.Done) != 3 {
		t.Errorf("Act done %+v; want 3", res.Done)
	}
	if st := s.imageState(img); st != "available" {
		t.Errorf("AMI %s is %s; want untouched", img, st)
	}
}
