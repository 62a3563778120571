package cleanup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

func runID(t time.Time, n byte) string {
	id, err := fleet.RunID(t, bytes.NewReader([]byte{0, 0, n}))
	if err != nil {
		panic(err)
	}
	return id
}

// keys lists findings as "region kind resource id".
func keys(fs []Finding) []string {
	var ks []string
	for _, f := range fs {
		ks = append(ks, fmt.Sprintf("%s %s %s %s", f.Region, f.Kind, f.Resource, f.ID))
	}
	sort.Strings(ks)
	return ks
}

func want(ks ...string) []string { sort.Strings(ks); return ks }

// world is what TestSweep seeds.
type world struct {
	base time.Time // when seeding happened: moto's attach times
	// us-east-1
	r1Builder, r1SG, r1Image, r1Verify string   // ended run, young: stays (verify is a leftover)
	r1Snaps                            []string // stay
	r0Builder, r0SG, r0Image           string   // ended run, expired: builder and SG go, image stays
	r2Key, r2SG, r2Builder, r2Image    string   // killed run, old: all go
	r2Snaps                            []string
	r3Key, r3SG, r3Builder             string // live run: stays
	zTagged, zUntagged, zW2            string // instances of workers (handoff)
	protected, foreign, protectedRun   string
	// eu-west-1
	euKey, euSG, euZombie string
}

func seedWorld(t *testing.T, get func(string) *ec2.Client) *world {
	t.Helper()
	w := &world{base: time.Now()}
	s := newSeeder(t, get("us-east-1"))
	now := w.base.Add(3 * time.Hour) // the Now of Find

	// r1: a completed bake an hour ago: key deleted, builder stopped and
	// kept with its group, image available; a verify instance left running.
	l1 := s.labels(runID(now.Add(-time.Hour), 1), "w1", now.Add(23*time.Hour))
	w.r1SG = s.group(l1)
	w.r1Builder = s.instance(s.base, w.r1SG, l1.Tags(fleet.RoleBuilder, "b1"))
	s.stop(w.r1Builder)
	w.r1Image, w.r1Snaps = s.image(l1, w.r1Builder, fleet.AMIName("lw", "w1", now.Add(-time.Hour)))
	w.r1Verify = s.instance(w.r1Image, w.r1SG, l1.Tags(fleet.RoleVerify, "v1"))

	// r0: a completed bake two days ago, past its expiry.
	l0 := s.labels(runID(now.Add(-48*time.Hour), 2), "w1", now.Add(-24*time.Hour))
	w.r0SG = s.group(l0)
	w.r0Builder = s.instance(s.base, w.r0SG, l0.Tags(fleet.RoleBuilder, "b0"))
	s.stop(w.r0Builder)
	w.r0Image, _ = s.image(l0, w.r0Builder, fleet.AMIName("lw", "w1", now.Add(-48*time.Hour)))

	// r2: a bake killed after wait-image five hours ago (MaxAge is 2h).
	l2 := s.labels(runID(now.Add(-5*time.Hour), 3), "w1", now.Add(19*time.Hour))
	w.r2Key = s.keyPair(l2)
	w.r2SG = s.group(l2)
	w.r2Builder = s.instance(s.base, w.r2SG, l2.Tags(fleet.RoleBuilder, "b2"))
	w.r2Image, w.r2Snaps = s.image(l2, w.r2Builder, fleet.AMIName("lw", "w1", now.Add(-5*time.Hour)))

	// r3: a bake in progress, started ten minutes ago.
	l3 := s.labels(runID(now.Add(-10*time.Minute), 4), "w1", now.Add(24*time.Hour))
	w.r3Key = s.keyPair(l3)
	w.r3SG = s.group(l3)
	w.r3Builder = s.instance(s.base, w.r3SG, l3.Tags(fleet.RoleBuilder, "b3"))

	// A protected builder of the killed run.
	w.protectedRun = s.instance(s.base, "", append(l2.Tags(fleet.RoleBuilder, "kept"), fleet.TagList(map[string]string{DefaultProtectTag: ""})...))

	// The master's instances: from the worker's AMI, tagged after launch
	// or not at all.
	w.zTagged = s.handoff(w.r1Image, map[string]string{fleet.TagWorker: "w1"})
	w.zUntagged = s.handoff(w.r1Image, nil)
	w.zW2 = s.handoff(s.base, map[string]string{fleet.TagWorker: "w2"})
	w.protected = s.handoff(w.r1Image, map[string]string{fleet.TagWorker: "w1", DefaultProtectTag: "yes"})
	w.foreign = s.handoff(s.base, map[string]string{"Name": "someone else's"})

	// eu-west-1: a killed run's key pair and group, and a zombie.
	eu := newSeeder(t, get("eu-west-1"))
	le := eu.labels(runID(now.Add(-30*time.Hour), 5), "w2", now.Add(-6*time.Hour))
	w.euKey = eu.keyPair(le)
	w.euSG = eu.group(le)
	w.euZombie = eu.handoff(eu.base, map[string]string{fleet.TagWorker: "w2"})
	return w
}

func TestSweep(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	w := seedWorld(t, get)
	ctx := context.Background()
	regions := []string{"us-east-1", "eu-west-1"}
	at := func(d time.Duration) func() time.Time { return func() time.Time { return w.base.Add(d) } }

	all := want(
		"eu-west-1 leftover key-pair "+w.euKey,
		"eu-west-1 leftover security-group "+w.euSG,
		"eu-west-1 zombie instance "+w.euZombie,
		"us-east-1 leftover instance "+w.r1Verify,
		"us-east-1 leftover instance "+w.r0Builder,
		"us-east-1 leftover security-group "+w.r0SG,
		"us-east-1 leftover key-pair "+w.r2Key,
		"us-east-1 leftover security-group "+w.r2SG,
		"us-east-1 leftover instance "+w.r2Builder,
		"us-east-1 leftover image "+w.r2Image,
		"us-east-1 zombie instance "+w.zTagged,
		"us-east-1 zombie instance "+w.zUntagged,
		"us-east-1 zombie instance "+w.zW2,
	)
	for _, sn := range w.r2Snaps {
		all = append(all, "us-east-1 leftover snapshot "+sn)
	}
	sort.Strings(all)

	t.Run("find", func(t *testing.T) {
		rep, err := Find(ctx, clients, Options{Regions: regions, MaxAge: 2 * time.Hour, Now: at(3 * time.Hour)})
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		if got := keys(rep.Findings); !slices.Equal(got, all) {
			t.Errorf("Find found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(all, "\n"))
		}
		t.Logf("API calls: %d %v; warnings %q", rep.APICalls, rep.Calls, rep.Warnings)
		for _, f := range rep.Findings {
			if f.Resource == ResInstance && f.Kind == KindZombie && (f.Age < 3*time.Hour-time.Minute || f.Age > 3*time.Hour+time.Minute) {
				t.Errorf("zombie %s age %v; want about 3h (from the interface's attach time)", f.ID, f.Age)
			}
		}
		var b bytes.Buffer
		if err := rep.WriteText(&b); err != nil || strings.Count(b.String(), "\n") != len(all) {
			t.Errorf("WriteText = %v, %d lines; want %d:\n%s", err, strings.Count(b.String(), "\n"), len(all), b.String())
		}
		t.Logf("report:\n%s", b.String())
		b.Reset()
		if err := rep.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		var sum struct {
			Type      string
			Zombies   int
			Leftovers int
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Type != "summary" || sum.Zombies != 4 || sum.Leftovers != len(all)-4 {
			t.Errorf("JSON summary %s = %+v, %v; want 4 zombies, %d leftovers", lines[len(lines)-1], sum, err, len(all)-4)
		}
	})

	t.Run("young", func(t *testing.T) {
		// Two minutes after seeding: only what is past expiry or belongs
		// to an ended run, no zombie, no killed run yet... except that r2
		// and eu's run IDs are hours old already.
		rep, err := Find(ctx, clients, Options{Regions: regions, MaxAge: 2 * time.Hour, Now: at(2 * time.Minute)})
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		for _, f := range rep.Findings {
			if f.Kind == KindZombie {
				t.Errorf("young sweep found zombie %s: %s", f.ID, f.Reason)
			}
		}
	})

	t.Run("worker", func(t *testing.T) {
		rep, err := Find(ctx, clients, Options{Regions: regions, Worker: "w2", MaxAge: 2 * time.Hour, Now: at(3 * time.Hour)})
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		w2 := want("eu-west-1 leftover key-pair "+w.euKey, "eu-west-1 leftover security-group "+w.euSG,
			"eu-west-1 zombie instance "+w.euZombie, "us-east-1 zombie instance "+w.zW2)
		if got := keys(rep.Findings); !slices.Equal(got, w2) {
			t.Errorf("Find(Worker w2) found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(w2, "\n"))
		}
	})

	t.Run("master", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/v2/workers/w1":
				fmt.Fprint(rw, `{"workers":[{"name":"w1","connected_to":[]}],"meta":{"total":1}}`)
			case "/api/v2/workers/w2":
				fmt.Fprint(rw, `{"workers":[{"name":"w2","connected_to":[{"masterid":1}]}],"meta":{"total":1}}`)
			default:
				http.NotFound(rw, r)
			}
		}))
		defer srv.Close()
		rep, err := Find(ctx, clients, Options{Regions: []string{"us-east-1"}, MaxAge: 2 * time.Hour, Grace: 15 * time.Minute,
			MasterURL: srv.URL, Now: at(30 * time.Minute)})
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		var zombies []string
		for _, f := range rep.Findings {
			if f.Kind == KindZombie {
				zombies = append(zombies, f.ID)
			}
		}
		if wantZ := []string{w.zTagged, w.zUntagged}; !slices.Equal(slices.Sorted(slices.Values(zombies)), slices.Sorted(slices.Values(wantZ))) {
			t.Errorf("zombies with w1 disconnected = %v; want %v", zombies, wantZ)
		}
		// w2 is connected: its instance survives max age (a worker kept
		// busy by back-to-back builds); w1's do not.
		rep, err = Find(ctx, clients, Options{Regions: []string{"us-east-1"}, MaxAge: 2 * time.Hour, Grace: 15 * time.Minute,
			MasterURL: srv.URL, Now: at(3 * time.Hour)})
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		zombies = nil
		for _, f := range rep.Findings {
			if f.Kind == KindZombie {
				zombies = append(zombies, f.ID)
			}
		}
		if wantZ := []string{w.zTagged, w.zUntagged}; !slices.Equal(slices.Sorted(slices.Values(zombies)), slices.Sorted(slices.Values(wantZ))) {
			t.Errorf("zombies past max age with w2 connected = %v; want %v (not w2's %s)", zombies, wantZ, w.zW2)
		}
		// A master that does not answer: a warning, max age only.
		srv.Close()
		rep, err = Find(ctx, clients, Options{Regions: []string{"us-east-1"}, MaxAge: 2 * time.Hour, MasterURL: srv.URL, Now: at(30 * time.Minute)})
		if err != nil || rep.Counts().Zombies != 0 || !slices.ContainsFunc(rep.Warnings, func(s string) bool { return strings.Contains(s, "buildmaster") }) {
			t.Errorf("Find(master down) = %v, %d zombies, warnings %q; want nil, 0, a warning", err, rep.Counts().Zombies, rep.Warnings)
		}
	})

	t.Run("act", func(t *testing.T) {
		opts := Options{Regions: regions, MaxAge: 2 * time.Hour, Now: at(3 * time.Hour)}
		rep, err := Find(ctx, clients, opts)
		if err != nil {
			t.Fatalf("Find = %v", err)
		}
		res, err := Act(ctx, clients, rep)
		if err != nil || len(res.Failed) > 0 {
			t.Fatalf("Act = %v; failed %+v", err, res.Failed)
		}
		t.Logf("Act: %d done, %d API calls %v", len(res.Done), res.APICalls, res.Calls)
		again, err := Find(ctx, clients, opts)
		if err != nil || len(again.Findings) != 0 {
			t.Errorf("Find after Act = %v, %v; want nothing", keys(again.Findings), err)
		}
		var b bytes.Buffer
		if err := again.WriteText(&b); err != nil || b.Len() != 0 {
			t.Errorf("WriteText of an empty report = %q, %v; want silence", b.String(), err)
		}
		s := newSeeder(t, get("us-east-1"))
		for _, id := range []string{w.protected, w.foreign, w.protectedRun, w.r1Builder, w.r3Builder} {
			if st := s.state(id); st == types.InstanceStateNameTerminated {
				t.Errorf("instance %s was terminated; want it untouched", id)
			}
		}
		for _, id := range []string{w.zTagged, w.r2Builder, w.r0Builder, w.r1Verify} {
			if st := s.state(id); st != types.InstanceStateNameTerminated {
				t.Errorf("instance %s is %s; want terminated", id, st)
			}
		}
		for _, c := range []struct{ id, want string }{{w.r1Image, "available"}, {w.r0Image, "available"}, {w.r2Image, "gone"}} {
			if got := s.imageState(c.id); got != c.want {
				t.Errorf("image %s is %s; want %s", c.id, got, c.want)
			}
		}
		// Acting again on the old report: everything is already gone.
		res, err = Act(ctx, clients, rep)
		if err != nil {
			t.Errorf("Act twice = %v; want nil (gone counts as done)", err)
		}
	})
}

func TestExitCode(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		found int
		acted bool
		err   error
		want  int
	}{{0, false, nil, 0}, {2, false, nil, 1}, {2, true, nil, 3}, {0, false, boom, 2}, {2, true, boom, 2}} {
		if got := ExitCode(c.found, c.acted, c.err); got != c.want {
			t.Errorf("ExitCode(%d, %v, %v) = %d; want %d", c.found, c.acted, c.err, got, c.want)
		}
	}
}
