package cleanup

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

func TestPruneImages(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	s := newSeeder(t, get("us-east-1"))
	ctx := context.Background()
	now := time.Now()

	// Five AMIs of w3, oldest first (moto dates them by creation, to the
	// second: the name breaks ties), one of w4, one protected by tag.
	var amis []string
	snaps := map[string][]string{}
	for i := range 5 {
		l := s.labels(runID(now.Add(time.Duration(i)*time.Hour), byte(i)), "w3", now.Add(24*time.Hour))
		b := s.instance(s.base, "", l.Tags(fleet.RoleBuilder, "b"))
		id, sn := s.image(l, b, fleet.AMIName("lw", "w3", now.Add(time.Duration(i)*time.Hour)))
		amis = append(amis, id)
		snaps[id] = sn
	}
	lp := s.labels(runID(now.Add(-time.Hour), 9), "w3", now.Add(24*time.Hour))
	lp.Extra = map[string]string{DefaultProtectTag: "golden"}
	pb := s.instance(s.base, "", lp.Tags(fleet.RoleBuilder, "b"))
	protectedAMI, _ := s.image(lp, pb, fleet.AMIName("lw", "w3", now.Add(-time.Hour)))
	l4 := s.labels(runID(now, 10), "w4", now.Add(24*time.Hour))
	other, _ := s.image(l4, s.instance(s.base, "", nil), fleet.AMIName("lw", "w4", now.Add(-2*time.Hour)))

	opts := Options{Regions: []string{"us-east-1"}}
	if _, err := PlanPrune(ctx, clients, "w3", 0, nil, opts); !errors.Is(err, ErrPruneArgs) {
		t.Errorf("PlanPrune(keep 0) = %v; want ErrPruneArgs", err)
	}
	// Keep the newest two and protect the oldest (the last handoff's).
	rep, res, err := PruneImages(ctx, clients, "w3", 2, []string{amis[0]}, opts)
	if err != nil || len(res.Failed) > 0 {
		t.Fatalf("PruneImages = %v; failed %+v", err, res.Failed)
	}
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.ID)
		if f.Kind != KindPrune {
			t.Errorf("finding %s kind %s; want prune", f.ID, f.Kind)
		}
	}
	wantIDs := slices.Sorted(slices.Values([]string{amis[1], amis[2]}))
	if slices.Sort(got); !slices.Equal(got, wantIDs) {
		t.Errorf("PruneImages pruned %v; want %v", got, wantIDs)
	}
	for i, id := range amis {
		wantState := "available"
		if i == 1 || i == 2 {
			wantState = "gone"
		}
		if st := s.imageState(id); st != wantState {
			t.Errorf("AMI %d %s is %s; want %s", i, id, st, wantState)
		}
	}
	for _, id := range []string{protectedAMI, other} {
		if st := s.imageState(id); st != "available" {
			t.Errorf("AMI %s is %s; want available", id, st)
		}
	}
	deleted := 0
	for _, a := range res.Done {
		if a.Op == OpDeleteSnapshot {
			deleted++
		}
	}
	if w := len(snaps[amis[1]]) + len(snaps[amis[2]]); deleted != w || w == 0 {
		t.Errorf("PruneImages deleted %d snapshots; want %d (> 0)", deleted, w)
	}
	// Nothing more to prune.
	if rep, err := PlanPrune(ctx, clients, "w3", 2, []string{amis[0]}, opts); err != nil || len(rep.Findings) != 0 {
		t.Errorf("PlanPrune again = %v, %v; want nothing", keys(rep.Findings), err)
	}
}
