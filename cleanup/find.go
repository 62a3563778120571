package cleanup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/fleet"
)

// Defaults of Options.
const (
	// DefaultMaxAge is how long a worker's instance may live. A latent
	// instance lives for one build plus the master's build_wait_timeout
	// (10 minutes by default); CPython's slowest builds (refleak hunts on
	// slow machines) take a few hours, so 12 hours is far past any
	// legitimate life and well before a forgotten instance costs a day.
	DefaultMaxAge = 12 * time.Hour
	// DefaultGrace is how long an instance may be up without its worker
	// connected to the master: boot plus the worker's first connection.
	DefaultGrace = 15 * time.Minute
	// DefaultProtectTag excludes any resource that carries it.
	DefaultProtectTag = fleet.Prefix + "protect"
	// DefaultConcurrency is how many regions are searched at once.
	DefaultConcurrency = 8
)

// ProfilePrefix starts the name of a worker's instance profile,
// "latentworker-WORKER" (iam.Name), under any IAM path (iam.DefaultPath is
// /latentworker/).
const ProfilePrefix = "latentworker-"

// Options tune Find.
type Options struct {
	// Regions to search; empty: every region the account has enabled
	// (DescribeRegions, opt-in status not "not-opted-in").
	Regions []string
	// Worker limits the search to one buildbot worker; "" means all.
	Worker string
	// MaxAge: see the package comment. Zero means DefaultMaxAge.
	MaxAge time.Duration
	// Grace: see the package comment. Zero means DefaultGrace.
	Grace time.Duration
	// MasterURL is the buildmaster's web root (e.g.
	// http://buildmaster:8010/); "" does not ask the master.
	MasterURL string
	// HTTPClient asks the master; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// ProtectTag excludes any resource carrying this tag key, whatever its
	// value. "" means DefaultProtectTag.
	ProtectTag string
	// KeepImages are AMI IDs that are never leftovers (the last handoff's).
	KeepImages []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Concurrency bounds the regions searched at once; 0 means
	// DefaultConcurrency.
	Concurrency int
}

func (o Options) withDefaults() Options {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.ProtectTag == "" {
		o.ProtectTag = DefaultProtectTag
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return o
}

// liveStates are the instance states a sweep looks at.
var liveStates = []string{"pending", "running", "stopping", "stopped"}

// maxFilterValues is how many values one filter may carry.
const maxFilterValues = 200

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

func tagsMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// Find searches every region of opts for zombies and leftovers. It makes no
// change. Regions are searched in parallel, at most opts.Concurrency at a
// time; on error the report still holds what the other regions found, and
// the error joins each region's error. On cancel it returns ctx's error.
func Find(ctx context.Context, clients ClientFunc, opts Options) (Report, error) {
	opts = opts.withDefaults()
	start := time.Now()
	var calls Calls
	client := func(region string) EC2API { return Counting(clients(region), &calls) }
	var rep Report
	regions, err := Regions(ctx, client, opts.Regions)
	if err != nil {
		return rep, err
	}
	rep.Regions = regions
	m := &master{url: opts.MasterURL, hc: opts.HTTPClient, cache: map[string]masterAnswer{}}
	err = forRegions(ctx, regions, opts.Concurrency, func(ctx context.Context, region string) (regionOut, error) {
		s := &search{region: region, api: client(region), clients: client, opts: opts, now: opts.Now(), master: m}
		err := s.run(ctx)
		if denied(err) {
			// An organisation may deny a region (an SCP): that region is
			// not searched, the others are.
			return regionOut{warnings: append(s.warnings, fmt.Sprintf("region %s was not searched: access denied (%v)", region, err))}, nil
		}
		return regionOut{findings: s.findings, warnings: s.warnings}, err
	}, &rep)
	rep.APICalls, rep.Calls, rep.Elapsed = calls.Total(), calls.ByOperation(), time.Since(start)
	rep.sort()
	return rep, err
}

type regionOut struct {
	findings []Finding
	warnings []string
}

// forRegions runs f for each region, at most n at once, and gathers the
// findings and warnings into rep.
func forRegions(ctx context.Context, regions []string, n int, f func(context.Context, string) (regionOut, error), rep *Report) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, n)
	)
	for _, region := range regions {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				errs = append(errs, fmt.Errorf("region %s: %w", region, context.Cause(ctx)))
				mu.Unlock()
				return
			}
			defer func() { <-sem }()
			out, err := f(ctx, region)
			mu.Lock()
			defer mu.Unlock()
			rep.Findings = append(rep.Findings, out.findings...)
			rep.Warnings = append(rep.Warnings, out.warnings...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Regions returns regions when not empty, else the regions the account has
// enabled, sorted, asked of clients("").
func Regions(ctx context.Context, clients ClientFunc, regions []string) ([]string, error) {
	if len(regions) > 0 {
		return slices.Compact(slices.Sorted(slices.Values(regions))), nil
	}
	out, err := clients("").DescribeRegions(ctx, &ec2.DescribeRegionsInput{
		Filters: []types.Filter{filter("opt-in-status", "opt-in-not-required", "opted-in")},
	})
	if err != nil {
		return nil, fmt.Errorf("listing the account's enabled regions (ec2 DescribeRegions): %w", err)
	}
	var rs []string
	for _, r := range out.Regions {
		// Some endpoints (moto) ignore the filter.
		if aws.ToString(r.OptInStatus) == "not-opted-in" {
			continue
		}
		rs = append(rs, aws.ToString(r.RegionName))
	}
	slices.Sort(rs)
	return rs, nil
}

// search is one region's search.
type search struct {
	region   string
	api      EC2API
	clients  ClientFunc // other regions' (a copy's run is judged in its source region)
	opts     Options
	now      time.Time
	master   *master
	findings []Finding
	warnings []string

	images    map[string]types.Image // ours (role=image), by ID
	instances map[string]types.Instance
	keys      map[string]types.KeyPairInfo // run key pairs by run ID
	srcKeys   map[string]types.KeyPairInfo // key pairs of the runs of copies, in their source regions
	runs      map[string]*run
}

func (s *search) warn(format string, a ...any) {
	s.warnings = append(s.warnings, s.region+": "+fmt.Sprintf(format, a...))
}

func (s *search) add(f Finding) {
	f.Region = s.region
	if !f.Since.IsZero() {
		f.Age = s.now.Sub(f.Since)
	}
	s.findings = append(s.findings, f)
}

// tagFilters are the filters that select what this tool tagged with key.
func (s *search) tagFilters(key string) []types.Filter {
	fs := []types.Filter{filter("tag-key", key)}
	if s.opts.Worker != "" {
		fs = append(fs, filter("tag:"+fleet.TagWorker, s.opts.Worker))
	}
	return fs
}

// runFilters select what a bake run tagged with role.
func (s *search) runFilters(role fleet.Role) []types.Filter {
	return append(s.tagFilters(fleet.TagRunID), filter("tag:"+fleet.TagRole, string(role)))
}

func (s *search) protected(tags map[string]string) bool {
	_, ok := tags[s.opts.ProtectTag]
	return ok
}

func (s *search) run(ctx context.Context) error {
	if err := s.listImages(ctx); err != nil {
		return err
	}
	if err := s.listInstances(ctx); err != nil {
		return err
	}
	if err := s.listKeyPairs(ctx); err != nil {
		return err
	}
	if err := s.listSourceKeyPairs(ctx); err != nil {
		return err
	}
	s.judgeRuns()
	s.judgeInstances(ctx)
	s.judgeKeyPairs()
	if err := s.judgeSecurityGroups(ctx); err != nil {
		return err
	}
	return s.judgeImagesAndSnapshots(ctx)
}

func (s *search) listImages(ctx context.Context) error {
	s.images = map[string]types.Image{}
	fs := []types.Filter{filter("tag:"+fleet.TagRole, string(fleet.RoleImage))}
	if s.opts.Worker != "" {
		fs = append(fs, filter("tag:"+fleet.TagWorker, s.opts.Worker))
	}
	p := ec2.NewDescribeImagesPaginator(s.api, &ec2.DescribeImagesInput{
		Owners: []string{"self"}, Filters: fs, IncludeDeprecated: aws.Bool(true),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing latentworker AMIs (ec2 DescribeImages) in %s: %w", s.region, err)
		}
		for _, im := range out.Images {
			s.images[aws.ToString(im.ImageId)] = im
		}
	}
	return nil
}

func (s *search) describeInstances(ctx context.Context, what string, opt []func(*ec2.Options), fs ...types.Filter) error {
	fs = append(fs, filter("instance-state-name", liveStates...))
	p := ec2.NewDescribeInstancesPaginator(s.api, &ec2.DescribeInstancesInput{Filters: fs, MaxResults: aws.Int32(1000)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, opt...)
		if err != nil {
			return fmt.Errorf("listing instances %s (ec2 DescribeInstances) in %s: %w", what, s.region, err)
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				s.instances[aws.ToString(in.InstanceId)] = in
			}
		}
	}
	return nil
}

// listInstances gathers the instances of workers: tagged with the worker
// tag (bake's and the handoff's), launched from our AMIs, or running with
// a worker's instance profile.
func (s *search) listInstances(ctx context.Context) error {
	s.instances = map[string]types.Instance{}
	if err := s.describeInstances(ctx, "tagged "+fleet.TagWorker, nil, s.tagFilters(fleet.TagWorker)...); err != nil {
		return err
	}
	ids := slices.Sorted(maps.Keys(s.images))
	for chunk := range slices.Chunk(ids, maxFilterValues) {
		if err := s.describeInstances(ctx, "launched from latentworker AMIs", nil, filter("image-id", chunk...)); err != nil {
			return err
		}
	}
	w := s.opts.Worker
	if w == "" {
		w = "*"
	}
	// Retried only when throttled: an endpoint that does not implement the
	// filter (moto, the lab) answers 500, which the SDK would retry with
	// backoff.
	noRetry := []func(*ec2.Options){func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Retryables = []retry.IsErrorRetryable{retry.RetryableErrorCode{Codes: retry.DefaultThrottleErrorCodes}}
		})
	}}
	err := s.describeInstances(ctx, "with a worker instance profile", noRetry, filter("iam-instance-profile.arn", "arn:*:iam::*:instance-profile/*"+ProfilePrefix+w))
	if err != nil && unsupportedFilter(err) {
		s.warn("the endpoint refused the iam-instance-profile.arn filter (%s): instances found only by their worker instance profile were not looked for", errSummary(err))
		return nil
	}
	return err
}

// unsupportedFilter reports whether err is an endpoint refusing a filter
// (moto raises NotImplementedError, which it returns as a 500).
func unsupportedFilter(err error) bool {
	switch awserr.Code(err) {
	case "InvalidParameterValue", "InvalidFilter", "InternalError", "InternalFailure", "NotImplemented":
		return true
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusInternalServerError
}

// errSummary is the AWS error code of err, else its HTTP status.
func errSummary(err error) string {
	if c := awserr.Code(err); c != "" {
		return c
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return fmt.Sprintf("HTTP %d", re.HTTPStatusCode())
	}
	return err.Error()
}

func (s *search) listKeyPairs(ctx context.Context) error {
	s.keys = map[string]types.KeyPairInfo{}
	out, err := s.api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: s.runFilters(fleet.RoleTempKey)})
	if err != nil {
		return fmt.Errorf("listing bake key pairs (ec2 DescribeKeyPairs) in %s: %w", s.region, err)
	}
	for _, k := range out.KeyPairs {
		tags := tagsMap(k.Tags)
		if rid := tags[fleet.TagRunID]; rid != "" {
			s.keys[rid] = k
		}
	}
	return nil
}

// listSourceKeyPairs finds the temporary key pairs of the runs that made
// this region's copies (aws.copy_to_regions): a copy's run keeps its key
// pair, and its lease, in the copy's source region. A copy of a killed run
// is then a leftover as its original is, and one of a live run is left
// alone.
func (s *search) listSourceKeyPairs(ctx context.Context) error {
	s.srcKeys = map[string]types.KeyPairInfo{}
	if s.clients == nil {
		return nil
	}
	runs := map[string][]string{} // source region -> run IDs
	for _, im := range s.images {
		tags := tagsMap(im.Tags)
		src, rid := tags[fleet.TagSourceRegion], tags[fleet.TagRunID]
		if src == "" || src == s.region || rid == "" {
			continue
		}
		if _, ok := s.keys[rid]; !ok && !slices.Contains(runs[src], rid) {
			runs[src] = append(runs[src], rid)
		}
	}
	for _, src := range slices.Sorted(maps.Keys(runs)) {
		fs := append(s.runFilters(fleet.RoleTempKey), filter("tag:"+fleet.TagRunID, runs[src]...))
		out, err := s.clients(src).DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: fs})
		if denied(err) {
			s.warn("the runs of copies from %s were not checked there: access denied (%v)", src, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("listing the key pairs of the runs of copies (ec2 DescribeKeyPairs) in %s: %w", src, err)
		}
		for _, k := range out.KeyPairs {
			if rid := tagsMap(k.Tags)[fleet.TagRunID]; rid != "" {
				s.srcKeys[rid] = k
			}
		}
	}
	return nil
}

// run is what the search knows of one bake run in the region.
type run struct {
	id      string
	started time.Time // from the run ID; zero if it does not parse
	expires time.Time // from the key pair's tag; zero if none
	keyLeft bool      // its temporary key pair still exists
	state   runState
	why     string
}

type runState int

const (
	runEnded     runState = iota // its key pair is gone
	runLive                      // key pair present, young
	runAbandoned                 // key pair present, older than MaxAge or expired
)

func (s *search) runOf(id string) *run {
	if s.runs == nil {
		s.runs = map[string]*run{}
	}
	if r, ok := s.runs[id]; ok {
		return r
	}
	r := &run{id: id, state: runEnded, why: "its run " + id + " has ended"}
	r.started, _ = fleet.RunIDTime(id)
	k, ok := s.keys[id]
	if !ok {
		k, ok = s.srcKeys[id]
	}
	if ok {
		r.keyLeft = ok
		r.expires = expiry(tagsMap(k.Tags))
		since := r.started
		if since.IsZero() {
			since = aws.ToTime(k.CreateTime)
		}
		lease, _ := time.Parse(time.RFC3339, tagsMap(k.Tags)[fleet.TagLease])
		switch {
		case !lease.IsZero() && s.now.Before(lease):
			// A run renews its lease while it runs: alive, however old.
			r.state, r.why = runLive, fmt.Sprintf("its run %s is alive (it renewed its lease to %s)", id, lease.Format(time.RFC3339))
		case !lease.IsZero():
			r.state, r.why = runAbandoned, fmt.Sprintf("its run %s is dead (it stopped renewing its lease, which ended %s)", id, lease.Format(time.RFC3339))
		case !r.expires.IsZero() && s.now.After(r.expires):
			r.state, r.why = runAbandoned, fmt.Sprintf("its run %s did not complete (its temporary key pair is past its expiry %s)", id, r.expires.Format(time.RFC3339))
		case !since.IsZero() && s.now.Sub(since) > s.opts.MaxAge:
			r.state, r.why = runAbandoned, fmt.Sprintf("its run %s did not complete (its temporary key pair is still there %s after the run started; max age %s)", id, Round(s.now.Sub(since)), s.opts.MaxAge)
		default:
			r.state, r.why = runLive, "its run "+id+" is in progress"
		}
	}
	s.runs[id] = r
	return r
}

func (s *search) judgeRuns() {
	for id := range s.keys {
		s.runOf(id)
	}
}

// expiry parses the expires tag; zero when absent or malformed.
func expiry(tags map[string]string) time.Time {
	t, err := time.Parse(time.RFC3339, tags[fleet.TagExpires])
	if err != nil {
		return time.Time{}
	}
	return t
}

func (s *search) expired(tags map[string]string) (time.Time, bool) {
	e := expiry(tags)
	return e, !e.IsZero() && s.now.After(e)
}

// upSince is when an instance's current life started: the attach time of
// its primary network interface, else its launch time.
func upSince(in types.Instance) time.Time {
	for _, ni := range in.NetworkInterfaces {
		if a := ni.Attachment; a != nil && aws.ToInt32(a.DeviceIndex) == 0 && a.AttachTime != nil {
			return *a.AttachTime
		}
	}
	return aws.ToTime(in.LaunchTime)
}

// workerOf names the worker an instance belongs to.
func (s *search) workerOf(in types.Instance, tags map[string]string) string {
	if w := tags[fleet.TagWorker]; w != "" {
		return w
	}
	if im, ok := s.images[aws.ToString(in.ImageId)]; ok {
		if w := tagsMap(im.Tags)[fleet.TagWorker]; w != "" {
			return w
		}
	}
	if p := in.IamInstanceProfile; p != nil {
		arn := aws.ToString(p.Arn)
		if i := strings.LastIndex(arn, "/"+ProfilePrefix); i >= 0 {
			return arn[i+1+len(ProfilePrefix):]
		}
	}
	return ""
}

func instanceGroups(in types.Instance) []string {
	var gs []string
	for _, g := range in.SecurityGroups {
		gs = append(gs, aws.ToString(g.GroupId))
	}
	return gs
}

// judgeInstances decides each instance: bake's by its run, the others as
// zombies or not.
func (s *search) judgeInstances(ctx context.Context) {
	connectedOld := map[string][]string{} // past max age, kept: the worker is connected
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		in := s.instances[id]
		tags := tagsMap(in.Tags)
		if s.protected(tags) {
			continue
		}
		worker := s.workerOf(in, tags)
		if s.opts.Worker != "" && worker != s.opts.Worker {
			continue
		}
		since := upSince(in)
		f := Finding{Resource: ResInstance, ID: id, Name: tags[fleet.TagName], Worker: worker,
			RunID: tags[fleet.TagRunID], Since: since, SecurityGroups: instanceGroups(in)}
		if in.State != nil {
			f.State = string(in.State.Name)
		}
		if rid := tags[fleet.TagRunID]; rid != "" {
			role := fleet.Role(tags[fleet.TagRole])
			if role != fleet.RoleBuilder && role != fleet.RoleVerify {
				continue // not a bake instance, and tagged with a run: not ours to judge
			}
			if reason, ok := s.leftoverInstance(rid, role, tags); ok {
				f.Kind, f.Reason = KindLeftover, reason
				s.add(f)
			}
			continue
		}
		age := s.now.Sub(since)
		if age <= s.opts.Grace && age <= s.opts.MaxAge {
			continue
		}
		// With a master, a connected worker's instance is never a zombie,
		// whatever its age: it may be in the middle of a build (back-to-back
		// builds keep an instance up for as long as they come). Max age
		// applies to instances whose worker is not connected, or when the
		// master cannot say.
		connected, asked := false, false
		if s.master.enabled() && worker != "" {
			var err error
			connected, err = s.master.connected(ctx, worker)
			if err != nil {
				s.warn("%v; only max age applies to instance %s", err, id)
			} else {
				asked = true
			}
		}
		switch {
		case connected:
			if age > s.opts.MaxAge {
				connectedOld[worker] = append(connectedOld[worker], id)
			}
			continue
		case age > s.opts.MaxAge:
			f.Kind, f.Reason = KindZombie, fmt.Sprintf("worker %s instance up %s since %s, longer than max age %s", worker, Round(age), since.UTC().Format(time.RFC3339), s.opts.MaxAge)
			if asked {
				f.Reason += ", and its worker is not connected to the master"
			}
		case asked && age > s.opts.Grace:
			f.Kind, f.Reason = KindZombie, fmt.Sprintf("worker %s is not connected to the master and its instance is up %s, longer than grace %s", worker, Round(age), s.opts.Grace)
		default:
			continue
		}
		s.add(f)
	}
	for _, worker := range slices.Sorted(maps.Keys(connectedOld)) {
		if ids := connectedOld[worker]; len(ids) > 1 {
			s.warn("worker %s is connected to the master and has %d instances older than max age %s (%s): the master does not say which one it is, so none is removed; terminate the others by hand",
				worker, len(ids), s.opts.MaxAge, strings.Join(ids, ", "))
		}
	}
}

// leftoverInstance decides a bake instance of run rid with role.
func (s *search) leftoverInstance(rid string, role fleet.Role, tags map[string]string) (string, bool) {
	r := s.runOf(rid)
	if e, ok := s.expired(tags); ok {
		return fmt.Sprintf("%s instance of run %s past its expiry %s", role, rid, e.Format(time.RFC3339)), true
	}
	switch r.state {
	case runAbandoned:
		return string(role) + " instance: " + r.why, true
	case runEnded:
		if role == fleet.RoleVerify {
			return "verify instance: " + r.why, true
		}
	}
	return "", false
}

func (s *search) judgeKeyPairs() {
	for rid, k := range s.keys {
		tags := tagsMap(k.Tags)
		if s.protected(tags) {
			continue
		}
		r := s.runOf(rid)
		if r.state != runAbandoned {
			continue
		}
		id := aws.ToString(k.KeyPairId)
		if id == "" {
			id = aws.ToString(k.KeyName)
		}
		s.add(Finding{Kind: KindLeftover, Resource: ResKeyPair, ID: id, Name: aws.ToString(k.KeyName),
			Worker: tags[fleet.TagWorker], RunID: rid, Since: r.started, Reason: "temporary key pair: " + r.why})
	}
}

// leaving returns the IDs of the instances found so far as zombies or
// leftovers: Act terminates them.
func (s *search) leaving() map[string]bool {
	gone := map[string]bool{}
	for _, f := range s.findings {
		if f.Resource == ResInstance {
			gone[f.ID] = true
		}
	}
	return gone
}

func (s *search) judgeSecurityGroups(ctx context.Context) error {
	// Groups used by instances that stay, and by instances of each run.
	gone := s.leaving()
	usedByStaying := map[string]bool{}
	for id, in := range s.instances {
		if gone[id] {
			continue
		}
		for _, g := range instanceGroups(in) {
			usedByStaying[g] = true
		}
	}
	p := ec2.NewDescribeSecurityGroupsPaginator(s.api, &ec2.DescribeSecurityGroupsInput{Filters: s.runFilters(fleet.RoleTempSG)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing bake security groups (ec2 DescribeSecurityGroups) in %s: %w", s.region, err)
		}
		for _, g := range out.SecurityGroups {
			tags := tagsMap(g.Tags)
			id := aws.ToString(g.GroupId)
			if s.protected(tags) || usedByStaying[id] {
				continue
			}
			rid := tags[fleet.TagRunID]
			r := s.runOf(rid)
			f := Finding{Kind: KindLeftover, Resource: ResSecurityGroup, ID: id, Name: aws.ToString(g.GroupName),
				Worker: tags[fleet.TagWorker], RunID: rid, Since: r.started}
			e, expired := s.expired(tags)
			switch {
			case expired:
				f.Reason = fmt.Sprintf("temporary security group of run %s past its expiry %s", rid, e.Format(time.RFC3339))
			case r.state == runAbandoned:
				f.Reason = "temporary security group: " + r.why
			case r.state == runEnded:
				f.Reason = "temporary security group no instance uses any more: " + r.why
			default:
				continue
			}
			s.add(f)
		}
	}
	return nil
}

func imageSnapshots(im types.Image) []string {
	var ids []string
	for _, bd := range im.BlockDeviceMappings {
		if bd.Ebs != nil && aws.ToString(bd.Ebs.SnapshotId) != "" {
			ids = append(ids, aws.ToString(bd.Ebs.SnapshotId))
		}
	}
	return ids
}

func (s *search) judgeImagesAndSnapshots(ctx context.Context) error {
	// snapshot ID -> whether its image is removed (true) or stays (false).
	snapOf := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(s.images)) {
		im := s.images[id]
		tags := tagsMap(im.Tags)
		snaps := imageSnapshots(im)
		reason, ok := s.leftoverImage(im, tags)
		for _, sn := range snaps {
			snapOf[sn] = ok
		}
		if !ok {
			continue
		}
		since, _ := time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
		s.add(Finding{Kind: KindLeftover, Resource: ResImage, ID: id, Name: aws.ToString(im.Name),
			Worker: tags[fleet.TagWorker], RunID: tags[fleet.TagRunID], State: string(im.State),
			Since: since, Reason: reason, Snapshots: snaps})
	}
	p := ec2.NewDescribeSnapshotsPaginator(s.api, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"}, Filters: s.runFilters(fleet.RoleSnapshot),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing bake snapshots (ec2 DescribeSnapshots) in %s: %w", s.region, err)
		}
		for _, sn := range out.Snapshots {
			tags := tagsMap(sn.Tags)
			id := aws.ToString(sn.SnapshotId)
			removed, known := snapOf[id]
			if s.protected(tags) || (known && !removed) {
				continue
			}
			rid := tags[fleet.TagRunID]
			r := s.runOf(rid)
			f := Finding{Kind: KindLeftover, Resource: ResSnapshot, ID: id, Worker: tags[fleet.TagWorker], RunID: rid,
				State: string(sn.State), Since: aws.ToTime(sn.StartTime)}
			switch {
			case known:
				f.Reason = "snapshot of a leftover AMI"
			case r.state != runLive:
				f.Reason = "snapshot of no existing latentworker AMI: " + r.why
			default:
				continue
			}
			s.add(f)
		}
	}
	return nil
}

func (s *search) leftoverImage(im types.Image, tags map[string]string) (string, bool) {
	id := aws.ToString(im.ImageId)
	if s.protected(tags) || slices.Contains(s.opts.KeepImages, id) || fleet.SafeImage(tags) {
		return "", false // verified, released or handed off: never a leftover
	}
	rid := tags[fleet.TagRunID]
	if rid == "" {
		return "", false // an image we cannot tie to a run: only PlanPrune judges it
	}
	r := s.runOf(rid)
	switch {
	case r.state == runAbandoned:
		return fmt.Sprintf("%s AMI: %s", im.State, r.why), true
	case r.state == runLive:
		return "", false
	case im.State == types.ImageStateAvailable:
		return "", false // the product of a completed bake
	}
	if e, ok := s.expired(tags); ok || im.State != types.ImageStatePending {
		if ok {
			return fmt.Sprintf("%s AMI past its expiry %s: %s", im.State, e.Format(time.RFC3339), r.why), true
		}
		return fmt.Sprintf("%s AMI: %s", im.State, r.why), true
	}
	return "", false
}

// denied reports whether err is AWS refusing the caller access (an SCP or a
// policy that excludes a region), not a failure of the search.
func denied(err error) bool {
	switch awserr.Code(err) {
	case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure":
		return true
	}
	return false
}
