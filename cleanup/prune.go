package cleanup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/latentworker/latentworker/fleet"
)

// ErrPruneArgs is returned for a prune without a worker or with keep < 1.
var ErrPruneArgs = errors.New("prune images")

// PlanPrune reports, in each region of opts, the available AMIs that bake
// made for worker (tags role=image and worker=WORKER) beyond the newest
// keep by creation date, as findings of KindPrune carrying their
// snapshots. It never lists one of the newest keep, an AMI in protect or
// opts.KeepImages, or one carrying opts.ProtectTag. Of opts it uses Regions,
// ProtectTag, KeepImages, Now and Concurrency. keep must be at least 1: a
// worker with no AMI cannot start.
func PlanPrune(ctx context.Context, clients ClientFunc, worker string, keep int, protect []string, opts Options) (Report, error) {
	if worker == "" || keep < 1 {
		return Report{}, fmt.Errorf("%w: need a worker and keep >= 1 (got worker %q, keep %d)", ErrPruneArgs, worker, keep)
	}
	opts = opts.withDefaults()
	protect = slices.Concat(protect, opts.KeepImages)
	start := time.Now()
	var calls Calls
	client := func(region string) EC2API { return Counting(clients(region), &calls) }
	var rep Report
	regions, err := Regions(ctx, client, opts.Regions)
	if err != nil {
		return rep, err
	}
	rep.Regions = regions
	now := opts.Now()
	err = forRegions(ctx, regions, opts.Concurrency, func(ctx context.Context, region string) (regionOut, error) {
		var out regionOut
		p := ec2.NewDescribeImagesPaginator(client(region), &ec2.DescribeImagesInput{
			Owners: []string{"self"},
			Filters: []types.Filter{
				filter("tag:"+fleet.TagRole, string(fleet.RoleImage)),
				filter("tag:"+fleet.TagWorker, worker),
				filter("state", string(types.ImageStateAvailable)),
			},
			IncludeDeprecated: aws.Bool(true),
		})
		var images []types.Image
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return out, fmt.Errorf("listing AMIs of worker %s (ec2 DescribeImages) in %s: %w", worker, region, err)
			}
			images = append(images, page.Images...)
		}
		// Newest first; the name (which carries the date) breaks ties.
		slices.SortFunc(images, func(a, b types.Image) int {
			return cmp.Or(cmp.Compare(aws.ToString(b.CreationDate), aws.ToString(a.CreationDate)),
				cmp.Compare(aws.ToString(b.Name), aws.ToString(a.Name)))
		})
		// The last handed-off AMI is the one the master runs: never pruned.
		lastHandoff, lastAt := "", ""
		for _, im := range images {
			if at := tagsMap(im.Tags)[fleet.TagHandedOff]; at > lastAt {
				lastHandoff, lastAt = aws.ToString(im.ImageId), at
			}
		}
		// Protected AMIs (by tag) are outside retention altogether: they
		// take no place among the newest kept.
		kept := 0
		for _, im := range images {
			id := aws.ToString(im.ImageId)
			tags := tagsMap(im.Tags)
			if _, p := tags[opts.ProtectTag]; p {
				continue
			}
			if kept < keep {
				kept++
				continue
			}
			if slices.Contains(protect, id) || id == lastHandoff {
				continue
			}
			since, _ := time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
			f := Finding{Region: region, Kind: KindPrune, Resource: ResImage, ID: id, Name: aws.ToString(im.Name),
				Worker: worker, RunID: tags[fleet.TagRunID], State: string(im.State), Since: since,
				Reason: fmt.Sprintf("older AMI of worker %s: %d newer kept", worker, keep), Snapshots: imageSnapshots(im)}
			if !since.IsZero() {
				f.Age = now.Sub(since)
			}
			out.findings = append(out.findings, f)
		}
		return out, nil
	}, &rep)
	rep.APICalls, rep.Calls, rep.Elapsed = calls.Total(), calls.ByOperation(), time.Since(start)
	rep.sort()
	return rep, err
}

// PruneImages is PlanPrune followed by Act on what it found: it
// deregisters the worker's older AMIs and deletes their snapshots. When
// planning fails nothing is done.
func PruneImages(ctx context.Context, clients ClientFunc, worker string, keep int, protect []string, opts Options) (Report, Result, error) {
	rep, err := PlanPrune(ctx, clients, worker, keep, protect, opts)
	if err != nil {
		return rep, Result{}, err
	}
	res, err := Act(ctx, clients, rep)
	return rep, res, err
}
