package cleanup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// TestLease: a run whose key pair carries a lease in the future is alive
// however old it is, so nothing of it is touched whatever MaxAge; once the
// lease has ended the run is dead and everything of it is a leftover, long
// before MaxAge or its expiry.
func TestLease(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	c := get("us-east-1")
	s := newSeeder(t, c)
	ctx := context.Background()
	now := time.Now().UTC()
	runID, err := fleet.RunID(now.Add(-30*time.Hour), strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	l := s.labels(runID, "w-lease", now.Add(48*time.Hour))
	key := s.keyPair(l)
	sg := s.group(l)
	setLease := func(at time.Time) {
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{key},
			Tags: []types.Tag{{Key: aws.String(fleet.TagLease), Value: aws.String(at.Format(time.RFC3339))}}}); err != nil {
			t.Fatalf("CreateTags lease on %s: %v", key, err)
		}
	}
	find := func() []string {
		rep, err := Find(ctx, clients, Options{Regions: []string{"us-east-1"}, MaxAge: 12 * time.Hour, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range rep.Findings {
			if f.RunID == runID || f.ID == key || f.ID == sg {
				got = append(got, f.ID+": "+f.Reason)
			}
		}
		return got
	}
	setLease(now.Add(5 * time.Minute))
	if got := find(); len(got) != 0 {
		t.Errorf("a 30-hour-old run with a live lease: found %q; want nothing (a live run is never swept)", got)
	}
	setLease(now.Add(-time.Minute))
	got := find()
	if len(got) != 2 || !strings.Contains(strings.Join(got, " "), "stopped renewing its lease") {
		t.Errorf("a run whose lease ended: found %q; want its key pair and group, as a dead run's", got)
	}
}
