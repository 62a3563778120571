package cleanup

import (
	"context"
	"fmt"
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

// TestCopyOfKilledRun: a copy in another region (aws.copy_to_regions) is
// judged by its run's key pair in its source region: left alone while the
// lease is live, a leftover once it has ended, and the product of a
// completed run once the key pair is gone.
func TestCopyOfKilledRun(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	east, west := newSeeder(t, get("us-east-1")), newSeeder(t, get("us-west-2"))
	ctx := context.Background()
	now := time.Now().UTC()
	runID, err := fleet.RunID(now.Add(-time.Hour), strings.NewReader("cpy"))
	if err != nil {
		t.Fatal(err)
	}
	l := east.labels(runID, "w-copy", now.Add(24*time.Hour))
	key := east.keyPair(l)
	name := fleet.AMIName("lw", "w-copy", now)
	cp, snaps := west.image(l, west.instance(west.base, "", nil), name)
	west.tag(cp, map[string]string{fleet.TagSourceRegion: "us-east-1", fleet.TagCopyOf: "ami-0123456789abcdef0"})
	setLease := func(at time.Time) {
		if _, err := get("us-east-1").CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{key},
			Tags: []types.Tag{{Key: aws.String(fleet.TagLease), Value: aws.String(at.Format(time.RFC3339))}}}); err != nil {
			t.Fatalf("CreateTags lease on %s: %v", key, err)
		}
	}
	find := func() []string {
		rep, err := Find(ctx, clients, Options{Regions: []string{"us-west-2"}, MaxAge: 12 * time.Hour, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range rep.Findings {
			if f.RunID == runID || f.ID == cp {
				got = append(got, f.Region+" "+f.ID+": "+f.Reason)
			}
		}
		return got
	}
	setLease(now.Add(5 * time.Minute))
	if got := find(); len(got) != 0 {
		t.Errorf("a copy of a live run: found %q; want nothing", got)
	}
	setLease(now.Add(-time.Minute))
	got := strings.Join(find(), "\n")
	if !strings.Contains(got, "us-west-2 "+cp+": available AMI: its run "+runID+" is dead") || (len(snaps) > 0 && !strings.Contains(got, snaps[0])) {
		t.Errorf("a copy of a killed run: found\n%s\nwant the copy %s and its snapshots %v in us-west-2", got, cp, snaps)
	}
	if strings.Contains(got, key) {
		t.Errorf("the source region's key pair %s reported from us-west-2:\n%s", key, got)
	}
	if _, err := get("us-east-1").DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(fleet.TempName(runID))}); err != nil {
		t.Fatal(err)
	}
	if got := find(); len(got) != 0 {
		t.Errorf("a copy of a completed run: found %q; want nothing (the product)", got)
	}
}

// TestKilledRunKeepsSafeImage: a run killed after its image was verified
// (or released, or handed off) leaves a key pair whose lease ends; sweep
// then reports the run's temporaries but never that image, which only
// retention judges. An unverified image of the same dead run is a leftover.
func TestKilledRunKeepsSafeImage(t *testing.T) {
	url := mototest.Start(t)
	clients, get := motoClients(url)
	c := get("us-east-1")
	s := newSeeder(t, c)
	ctx := context.Background()
	now := time.Now().UTC()
	for i, tag := range []string{"", fleet.TagVerified, fleet.TagReady, fleet.TagHandedOff} {
		runID, err := fleet.RunID(now.Add(-time.Hour), strings.NewReader(fmt.Sprintf("k%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		worker := "w-safe" + strings.ReplaceAll(tag, ":", "-")
		l := s.labels(runID, worker, now.Add(24*time.Hour))
		key := s.keyPair(l)
		ami, _ := s.image(l, s.instance(s.base, "", nil), fleet.AMIName("lw", worker, now))
		if tag != "" {
			s.tag(ami, map[string]string{tag: now.Format(time.RFC3339)})
		}
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{key},
			Tags: []types.Tag{{Key: aws.String(fleet.TagLease), Value: aws.String(now.Add(-time.Minute).Format(time.RFC3339))}}}); err != nil {
			t.Fatal(err)
		}
		rep, err := Find(ctx, clients, Options{Regions: []string{"us-east-1"}, MaxAge: 12 * time.Hour, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		foundKey, foundImage := false, false
		for _, f := range rep.Findings {
			foundKey = foundKey || f.ID == key
			foundImage = foundImage || f.ID == ami
		}
		if !foundKey || foundImage != (tag == "") {
			t.Errorf("a killed run's image tagged %q: key pair found %v, image found %v; want the key pair, and the image only when untagged", tag, foundKey, foundImage)
		}
	}
}
