// Package status answers the guide's "periodically check the status of your
// worker": what the buildmaster says of one worker (connected or not and
// since when, its last build, its builds in the last day) and what AWS holds
// for it (its newest AMI and that AMI's age, its running instances, its
// zombies), and which of those needs its owner. It reads; it changes
// nothing except its own small state file, which remembers when the worker
// was first seen connected or disconnected, since the master's REST API
// does not say.
//
// It does not print or parse flags (cmd/latentworker's status command
// does) and it does not judge zombies itself (package cleanup does).
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/cleanup"
	"github.com/latentworker/latentworker/fleet"
)

// DefaultMasterURL is the CPython buildmaster's public web root; its REST
// API is under api/v2.
const DefaultMasterURL = "https://buildbot.python.org/all/"

// Problems a report can show, each with its exit code (cmd/latentworker).
const (
	ProblemOffline = "offline" // the worker is not connected, for longer than OfflineAfter
	ProblemOldAMI  = "old-ami" // the newest AMI is older than MaxAMIAge
	ProblemZombies = "zombies" // instances of the worker a master left running
)

// Options say which worker to look at and what counts as a problem.
type Options struct {
	Worker    string
	MasterURL string // the master's web root; "" is DefaultMasterURL
	// OfflineAfter: a worker not connected for longer is a problem. A
	// latent worker is connected only while it builds: set it longer than
	// the gaps between builds.
	OfflineAfter time.Duration
	// MaxAMIAge: a newest AMI older than this is a problem (refresh it with
	// bake --from-previous). Zero: never.
	MaxAMIAge time.Duration
	// MaxAge is the zombie age (cleanup.Options.MaxAge).
	MaxAge time.Duration
	// EC2 is the worker's region's client; nil skips the AWS part.
	EC2     cleanup.EC2API
	Region  string
	Clients cleanup.ClientFunc
	// StateFile remembers when the worker was first seen in its current
	// connection state; "" keeps nothing (every disconnection is new).
	StateFile  string
	HTTPClient *http.Client
	Now        func() time.Time
}

// Build is one build of the worker, as the master reports it.
type Build struct {
	Number    int        `json:"number"`
	BuilderID int        `json:"builder_id"`
	Result    string     `json:"result"` // success, warnings, failure, skipped, exception, retry, cancelled; "" while it runs
	Started   time.Time  `json:"started"`
	Completed *time.Time `json:"completed,omitempty"`
}

// Instance is a running instance of the worker.
type Instance struct {
	ID    string        `json:"id"`
	State string        `json:"state"`
	Type  string        `json:"type"`
	Up    time.Duration `json:"up_ns"`
}

// Report is the status of one worker.
type Report struct {
	Worker    string `json:"worker"`
	MasterURL string `json:"master_url"`
	// Known: the master has the worker in its configuration or database.
	Known     bool `json:"known"`
	Connected bool `json:"connected"`
	// Since is when the worker was first seen in its current state by
	// this command (zero without a state file).
	Since         time.Time `json:"since,omitzero"`
	LastBuild     *Build    `json:"last_build,omitempty"`
	BuildsLastDay int       `json:"builds_last_day"`

	Region    string        `json:"region,omitempty"`
	AMI       string        `json:"ami,omitempty"`
	AMIName   string        `json:"ami_name,omitempty"`
	AMIAge    time.Duration `json:"ami_age_ns,omitempty"`
	Instances []Instance    `json:"instances"`
	Zombies   []string      `json:"zombies"`

	Problems []string `json:"problems"`
	Warnings []string `json:"warnings"`
}

// Get builds the report. An error means the master (or AWS) could not be
// asked; a report with problems is not an error.
func Get(ctx context.Context, o Options) (*Report, error) {
	if o.MasterURL == "" {
		o.MasterURL = DefaultMasterURL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	now := o.Now()
	r := &Report{Worker: o.Worker, MasterURL: o.MasterURL, Region: o.Region, Instances: []Instance{}, Zombies: []string{}, Problems: []string{}, Warnings: []string{}}
	if err := r.master(ctx, o, now); err != nil {
		return nil, err
	}
	if o.EC2 != nil {
		if err := r.aws(ctx, o, now); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Offline is how long the worker has been seen disconnected (zero when
// connected, or without a state file).
func (r *Report) Offline(now time.Time) time.Duration {
	if r.Connected || r.Since.IsZero() {
		return 0
	}
	return now.Sub(r.Since)
}

var results = []string{"success", "warnings", "failure", "skipped", "exception", "retry", "cancelled"}

func (r *Report) master(ctx context.Context, o Options, now time.Time) error {
	api := strings.TrimSuffix(o.MasterURL, "/") + "/api/v2"
	var workers struct {
		Workers []struct {
			ID          int               `json:"workerid"`
			ConnectedTo []json.RawMessage `json:"connected_to"`
		} `json:"workers"`
	}
	err := getJSON(ctx, o.HTTPClient, api+"/workers/"+url.PathEscape(o.Worker), &workers)
	var nf errNotFound
	switch {
	case errors.As(err, &nf):
	case err != nil:
		return fmt.Errorf("asking the master at %s about worker %s: %w", o.MasterURL, o.Worker, err)
	}
	if len(workers.Workers) == 0 {
		r.Problems = append(r.Problems, ProblemOffline)
		r.Warnings = append(r.Warnings, fmt.Sprintf("the master at %s does not know worker %s: check worker.name with the buildmaster admins", o.MasterURL, o.Worker))
		return nil
	}
	w := workers.Workers[0]
	r.Known, r.Connected = true, len(w.ConnectedTo) > 0
	r.Since = remember(o.StateFile, o.Worker, r.Connected, now)
	if !r.Connected && o.OfflineAfter > 0 && r.Offline(now) > o.OfflineAfter {
		r.Problems = append(r.Problems, ProblemOffline)
	}

	var builds struct {
		Builds []struct {
			Number     int      `json:"number"`
			BuilderID  int      `json:"builderid"`
			Results    *int     `json:"results"`
			StartedAt  float64  `json:"started_at"`
			CompleteAt *float64 `json:"complete_at"`
		} `json:"builds"`
	}
	q := url.Values{"workerid": {strconv.Itoa(w.ID)}, "order": {"-started_at"}, "limit": {"200"},
		"started_at__gt": {strconv.FormatInt(now.Add(-24*time.Hour).Unix(), 10)}}
	if err := getJSON(ctx, o.HTTPClient, api+"/builds?"+q.Encode(), &builds); err != nil {
		return fmt.Errorf("asking the master at %s for the builds of %s: %w", o.MasterURL, o.Worker, err)
	}
	r.BuildsLastDay = len(builds.Builds)
	if len(builds.Builds) == 0 {
		// None in the last day: the last one ever.
		q.Del("started_at__gt")
		q.Set("limit", "1")
		if err := getJSON(ctx, o.HTTPClient, api+"/builds?"+q.Encode(), &builds); err != nil {
			return fmt.Errorf("asking the master at %s for the builds of %s: %w", o.MasterURL, o.Worker, err)
		}
	}
	if len(builds.Builds) > 0 {
		b := builds.Builds[0]
		lb := &Build{Number: b.Number, BuilderID: b.BuilderID, Started: unix(b.StartedAt)}
		if b.Results != nil && *b.Results >= 0 && *b.Results < len(results) {
			lb.Result = results[*b.Results]
		}
		if b.CompleteAt != nil {
			c := unix(*b.CompleteAt)
			lb.Completed = &c
		}
		r.LastBuild = lb
	}
	return nil
}

func unix(f float64) time.Time { return time.Unix(0, int64(f*1e9)).UTC() }

type errNotFound struct{ url string }

func (e errNotFound) Error() string { return e.url + ": not found" }

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotFound{u}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: not a buildbot REST answer: %w", u, err)
	}
	return nil
}

// state is what the state file keeps per worker.
type state struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
}

// remember records the worker's connection state in file and returns when
// it was first seen in it: by an earlier look, or now. Without a file it
// returns the zero time.
func remember(file, worker string, connected bool, now time.Time) time.Time {
	if file == "" {
		return time.Time{}
	}
	all := map[string]state{}
	if b, err := os.ReadFile(file); err == nil {
		_ = json.Unmarshal(b, &all)
	}
	if prev, ok := all[worker]; ok && prev.Connected == connected {
		return prev.Since
	}
	all[worker] = state{Connected: connected, Since: now.UTC()}
	if b, err := json.Marshal(all); err == nil && os.MkdirAll(filepath.Dir(file), 0o700) == nil {
		tmp := file + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			_ = os.Rename(tmp, file)
		}
	}
	return now.UTC()
}

func (r *Report) aws(ctx context.Context, o Options, now time.Time) error {
	imgs, err := o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + fleet.TagWorker), Values: []string{o.Worker}},
			{Name: aws.String("tag:" + fleet.TagRole), Values: []string{string(fleet.RoleImage)}},
			{Name: aws.String("state"), Values: []string{"available"}},
		},
	})
	if err != nil {
		return fmt.Errorf("finding the AMIs of worker %s in %s: %w", o.Worker, o.Region, err)
	}
	sort.Slice(imgs.Images, func(i, j int) bool {
		return aws.ToString(imgs.Images[i].CreationDate) > aws.ToString(imgs.Images[j].CreationDate)
	})
	var amis []string
	for _, im := range imgs.Images {
		amis = append(amis, aws.ToString(im.ImageId))
	}
	if len(imgs.Images) == 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("no AMI of worker %s in %s (latentworker bake makes one)", o.Worker, o.Region))
	} else {
		im := imgs.Images[0]
		r.AMI, r.AMIName = aws.ToString(im.ImageId), aws.ToString(im.Name)
		if t, err := time.Parse(time.RFC3339, aws.ToString(im.CreationDate)); err == nil {
			r.AMIAge = now.Sub(t)
		}
		if o.MaxAMIAge > 0 && r.AMIAge > o.MaxAMIAge {
			r.Problems = append(r.Problems, ProblemOldAMI)
		}
	}

	running := []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}}}
	var ins []types.Instance
	for _, f := range [][]types.Filter{
		append(running, types.Filter{Name: aws.String("tag:" + fleet.TagWorker), Values: []string{o.Worker}}),
		append(running, types.Filter{Name: aws.String("image-id"), Values: amis}),
	} {
		if len(f) == 2 && len(f[1].Values) == 0 {
			continue
		}
		p := ec2.NewDescribeInstancesPaginator(o.EC2, &ec2.DescribeInstancesInput{Filters: f})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("finding the instances of worker %s in %s: %w", o.Worker, o.Region, err)
			}
			for _, res := range out.Reservations {
				ins = append(ins, res.Instances...)
			}
		}
	}
	seen := map[string]bool{}
	for _, in := range ins {
		id := aws.ToString(in.InstanceId)
		if seen[id] {
			continue
		}
		seen[id] = true
		up := time.Duration(0)
		if in.LaunchTime != nil {
			up = now.Sub(*in.LaunchTime)
		}
		state := ""
		if in.State != nil {
			state = string(in.State.Name)
		}
		r.Instances = append(r.Instances, Instance{ID: id, State: state, Type: string(in.InstanceType), Up: up})
	}
	sort.Slice(r.Instances, func(i, j int) bool { return r.Instances[i].ID < r.Instances[j].ID })

	if o.Clients != nil {
		rep, err := cleanup.Find(ctx, o.Clients, cleanup.Options{Regions: []string{o.Region}, Worker: o.Worker, MaxAge: o.MaxAge, Now: o.Now})
		if err != nil {
			return fmt.Errorf("looking for zombies of worker %s: %w", o.Worker, err)
		}
		for _, f := range rep.Findings {
			if f.Kind == cleanup.KindZombie {
				r.Zombies = append(r.Zombies, f.ID)
			}
		}
		r.Warnings = append(r.Warnings, rep.Warnings...)
		if len(r.Zombies) > 0 {
			r.Problems = append(r.Problems, ProblemZombies)
		}
	}
	return nil
}
