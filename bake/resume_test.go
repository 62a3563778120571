package bake

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/lab/moto/mototest"
)

// motoBake is a bake's clients against a moto_server of the test's own:
// EC2 and STS, no instance ever boots.
type motoBake struct {
	url string
	ec2 *ec2.Client
	sts *sts.Client
	cfg *config.Config
	dir string
}

func newMotoBake(t *testing.T) *motoBake {
	t.Helper()
	url := mototest.Start(t)
	creds := credentials.NewStaticCredentialsProvider("testing", "testing", "")
	m := &motoBake{
		url: url, dir: t.TempDir(),
		ec2: ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds}),
		sts: sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: creds}),
	}
	m.cfg = config.Default()
	m.cfg.Worker.Name, m.cfg.Worker.Master = "w-resume", "master.example.org:9989"
	return m
}

func (m *motoBake) options(runID string) Options {
	return Options{
		Config: m.cfg, Password: config.NewSecret("hunter2-secret"), EC2: m.ec2, STS: m.sts,
		Region: "us-east-1", Endpoint: m.url, RunID: runID, ManifestPath: filepath.Join(m.dir, runID+".json"),
		Timeouts: Timeouts{Poll: 50 * time.Millisecond},
	}
}

// image makes an available AMI tagged as run runID's image (of worker),
// with extra tags, from an instance of a moto AMI, as bake tags its own.
func (m *motoBake) image(t *testing.T, runID, worker string, extra map[string]string) string {
	t.Helper()
	name := fleet.AMIName("latentworker", worker, time.Now())
	tags := fleet.Labels{RunID: runID, Worker: worker, Master: "baked.example.org:9020"}.Map(fleet.RoleImage, name)
	maps.Copy(tags, extra)
	return mototest.Image(t, m.ec2, name, tags)
}

// created lists the key pairs and security groups of run runID: what a
// resume's temporaries would leave.
func (m *motoBake) created(t *testing.T, runID string) []string {
	t.Helper()
	ctx := context.Background()
	var got []string
	kp, err := m.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []types.Filter{fleet.RunFilter(runID)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kp.KeyPairs {
		got = append(got, "key pair "+aws.ToString(k.KeyName))
	}
	sg, err := m.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{fleet.RunFilter(runID)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sg.SecurityGroups {
		got = append(got, "security group "+aws.ToString(g.GroupId))
	}
	return got
}

func (m *motoBake) tags(t *testing.T, ami string) map[string]string {
	t.Helper()
	out, err := m.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil || len(out.Images) != 1 || out.Images[0].State != types.ImageStateAvailable {
		t.Fatalf("image %s: %v (%d images); want it available", ami, err, len(out.Images))
	}
	tags := map[string]string{}
	for _, tg := range out.Images[0].Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	return tags
}

// TestResume: a resume finds its run's image by the run ID. A run that
// finished (its image released, or handed off) is left as it is: the
// resume creates and changes nothing and reports the image (case 1 of
// issue 21: resuming a finished run deleted its AMI). A run with nothing to
// resume, or another worker's, is ErrNothingToResume, found before anything
// is created. A verified image whose run failed later is finished without
// being booted again, then is a finished run itself.
func TestResume(t *testing.T) {
	m := newMotoBake(t)
	ctx := context.Background()
	now := time.Now().UTC().Format(time.RFC3339)

	for _, tag := range []string{fleet.TagReady, fleet.TagHandedOff} {
		runID := fleet.NewRunID()
		ami := m.image(t, runID, m.cfg.Worker.Name, map[string]string{tag: now})
		for range 2 {
			o := m.options(runID)
			o.Resume = runID
			res, err := Run(ctx, o)
			if err != nil || !res.Completed || !res.State.Finished || res.Manifest.ImageID != ami {
				t.Fatalf("resume of a run whose image is tagged %s = %v (finished %v, image %s); want success, finished, %s", tag, err, res.State.Finished, res.Manifest.ImageID, ami)
			}
			if res.Manifest.Master != "baked.example.org:9020" {
				t.Errorf("a finished run's master = %q; want the image's own, not the configuration's", res.Manifest.Master)
			}
			if got := m.created(t, runID); len(got) > 0 {
				t.Errorf("the resume of a finished run created %v", got)
			}
			if _, err := os.Stat(o.ManifestPath); err == nil {
				t.Errorf("the resume of a finished run wrote a manifest")
			}
			m.tags(t, ami) // still there, available
		}
	}

	for name, tc := range map[string]struct {
		worker string
		image  bool
	}{
		"no image":             {worker: m.cfg.Worker.Name},
		"another worker's run": {worker: "someone-else", image: true},
	} {
		runID := fleet.NewRunID()
		if tc.image {
			m.image(t, runID, tc.worker, nil)
		}
		o := m.options(runID)
		o.Resume = runID
		_, err := Run(ctx, o)
		if !errors.Is(err, ErrNothingToResume) || !strings.Contains(err.Error(), runID) {
			t.Errorf("%s: resume = %v; want ErrNothingToResume naming the run", name, err)
		}
		if got := m.created(t, runID); len(got) > 0 {
			t.Errorf("%s: the resume created %v", name, got)
		}
	}

	// Verified, then its run failed (a copy, the release...): the resume
	// does not boot it again, releases it and writes the manifest; the
	// next resume finds it finished.
	runID := fleet.NewRunID()
	ami := m.image(t, runID, m.cfg.Worker.Name, map[string]string{fleet.TagVerified: now})
	o := m.options(runID)
	o.Resume = runID
	res, err := Run(ctx, o)
	if err != nil || res.State.Finished || !res.Manifest.Verified {
		t.Fatalf("resume of a verified image = %v (finished %v, verified %v); want it released, verified", err, res.State.Finished, res.Manifest.Verified)
	}
	if tags := m.tags(t, ami); tags[fleet.TagReady] == "" {
		t.Errorf("after the resume, %s has no %s tag: %v", ami, fleet.TagReady, tags)
	}
	if got := m.created(t, runID); len(got) > 0 {
		t.Errorf("the resume left %v", got)
	}
	if b, err := os.ReadFile(o.ManifestPath); err != nil || !strings.Contains(string(b), ami) {
		t.Errorf("the manifest %s: %v", o.ManifestPath, err)
	}
	res, err = Run(ctx, o)
	if err != nil || !res.State.Finished {
		t.Errorf("a second resume = %v, finished %v; want a finished run", err, res.State.Finished)
	}
}

// TestVerifiedImageSurvivesLaterFailure: once the image is verified (here
// accepted unbooted with NoVerify), no failure removes it: a release whose
// manifest cannot be written keeps the released image, and the run says it
// kept it. Before verification, a failure still rolls the image back.
func TestVerifiedImageSurvivesLaterFailure(t *testing.T) {
	m := newMotoBake(t)
	ctx := context.Background()
	made := func(ami *string) Step {
		return Step{StepCreateImage, func(ctx context.Context, s *State) error {
			*ami = m.image(t, s.RunID, m.cfg.Worker.Name, nil)
			s.ImageID = *ami
			s.pushImageUndo(*ami)
			return nil
		}}
	}
	var ami string
	o := m.options(fleet.NewRunID())
	o.NoVerify = true
	o.ManifestPath = filepath.Join(m.dir, "no-such-dir", "manifest.json")
	o.Steps = []Step{made(&ami), {StepWaitImage, waitImage}, {StepVerifyImage, verifyImage}, {StepRelease, release}, {StepManifest, writeManifest}}
	res, err := Run(ctx, o)
	if err == nil || !res.State.ImageKept() || res.Completed {
		t.Fatalf("a run whose manifest fails after release = %v, kept %v; want an error and the image kept", err, res.State.ImageKept())
	}
	if tags := m.tags(t, ami); tags[fleet.TagReady] == "" {
		t.Errorf("the released image lost its %s tag: %v", fleet.TagReady, tags)
	}
	for _, l := range res.Leftovers {
		if l.ID == ami {
			t.Errorf("the kept image is reported as a leftover to remove: %v", l)
		}
	}

	boom := errors.New("boom")
	o = m.options(fleet.NewRunID())
	o.Steps = []Step{made(&ami), {StepWaitImage, waitImage}, {"fail", func(context.Context, *State) error { return boom }}}
	if res, err := Run(ctx, o); !errors.Is(err, boom) || res.State.ImageKept() {
		t.Fatalf("a run failing before verification = %v, kept %v; want boom and the image removed", err, res.State.ImageKept())
	}
	out, err := m.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{fleet.RunFilter(o.RunID)}})
	if err != nil || len(out.Images) != 0 {
		t.Errorf("the unverified image of a failed run: %v, %d images; want it removed", err, len(out.Images))
	}
}

// TestAttemptClientTokens: a launch's client token is the run's, the
// role's and the attempt's: two attempts of one run (a --resume) never
// share one, so EC2 never answers a resume's launch with an earlier
// attempt's (terminated) instance.
func TestAttemptClientTokens(t *testing.T) {
	var tokens []string
	for range 2 {
		f := &launchEC2{}
		cfg := config.Default()
		cfg.Worker.Name = "w"
		_, err := Run(context.Background(), Options{
			Config: cfg, Password: config.NewSecret("hunter2-secret"), EC2: f, STS: fakeSTS{},
			Region: "us-east-1", RunID: "20261124T001500Z-4f2a9c",
			Steps: []Step{
				{StepTempKey, tempKey},
				{StepVerifyImage, func(ctx context.Context, s *State) error {
					s.RootDevice = "/dev/xvda"
					_, _, err := s.runInstance(ctx, "ami-0123456789abcdef0", fleet.RoleVerify, KindTemp)
					return err
				}},
			},
		})
		if !errors.Is(err, errRecorded) || f.in == nil {
			t.Fatalf("Run = %v; want the recorded launch", err)
		}
		tok := aws.ToString(f.in.ClientToken)
		if !strings.HasPrefix(tok, "20261124T001500Z-4f2a9c-verify-") || len(tok) > 64 {
			t.Errorf("client token %q; want the run's, the role's and the attempt's, at most 64 characters", tok)
		}
		tokens = append(tokens, tok)
	}
	if tokens[0] == tokens[1] {
		t.Errorf("two attempts of one run launched with the same client token %q", tokens[0])
	}
}
