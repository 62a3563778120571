package cleanup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/latentworker/latentworker/awserr"
)

// Bounds of Act's waits.
var (
	// TerminateWait bounds the wait for a region's instances to terminate.
	TerminateWait = 10 * time.Minute
	// GroupWait bounds the retries of deleting a security group still in
	// use (DependencyViolation): an instance's network interface lingers
	// a little after it is terminated.
	GroupWait = 3 * time.Minute
	// pollEvery is the interval of those retries.
	pollEvery = 5 * time.Second
)

// Operations Act performs.
const (
	OpTerminate       = "terminate-instance"
	OpDeleteKeyPair   = "delete-key-pair"
	OpDeleteGroup     = "delete-security-group"
	OpDeregisterImage = "deregister-image"
	OpDeleteSnapshot  = "delete-snapshot"
)

// Action is one change Act made or tried.
type Action struct {
	Region string   `json:"region"`
	Op     string   `json:"op"`
	ID     string   `json:"id"`
	Kind   Kind     `json:"kind,omitempty"`
	Res    Resource `json:"resource"`
	// Error is the AWS error of a failed action ("" when done).
	Error string `json:"error,omitempty"`
	err   error
}

// Err is the failed action's error, wrapping the AWS error.
func (a Action) Err() error { return a.err }

// Result is what Act did.
type Result struct {
	Done     []Action `json:"done"`
	Failed   []Action `json:"failed"`
	APICalls int64    `json:"api_calls"`
	// Calls are the API calls by operation.
	Calls map[string]int64 `json:"calls,omitempty"`
}

// WriteText writes one line per action: "REGION done|FAILED OP ID [error]".
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, a := range r.Done {
		fmt.Fprintf(&b, "%s\tdone\t%s %s\n", a.Region, a.Op, a.ID)
	}
	for _, a := range r.Failed {
		fmt.Fprintf(&b, "%s\tFAILED\t%s %s\t%s\n", a.Region, a.Op, a.ID, a.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes newline-delimited JSON: {"type":"action",...} per
// action (failed ones carry "error"), then {"type":"result","done":N,
// "failed":M,"api_calls":K}.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, a := range slices.Concat(r.Done, r.Failed) {
		if err := enc.Encode(struct {
			Type string `json:"type"`
			Action
		}{"action", a}); err != nil {
			return err
		}
	}
	return enc.Encode(struct {
		Type     string           `json:"type"`
		Done     int              `json:"done"`
		Failed   int              `json:"failed"`
		APICalls int64            `json:"api_calls"`
		Calls    map[string]int64 `json:"calls,omitempty"`
	}{"result", len(r.Done), len(r.Failed), r.APICalls, r.Calls})
}

// Act removes what rep found, each region in parallel (at most
// DefaultConcurrency at once): it terminates instances and waits for them
// to be terminated, deletes key pairs, then security groups, deregisters
// AMIs and then deletes their snapshots. A resource already gone counts as
// done. It continues past failures: the error joins every failed action's
// error (each naming the operation, region and resource ID) and the Result
// lists them. On cancel, what was not done yet is reported as failed with
// ctx's error.
func Act(ctx context.Context, clients ClientFunc, rep Report) (Result, error) {
	var calls Calls
	byRegion := map[string][]Finding{}
	for _, f := range rep.Findings {
		byRegion[f.Region] = append(byRegion[f.Region], f)
	}
	var (
		mu  sync.Mutex
		res Result
		wg  sync.WaitGroup
		sem = make(chan struct{}, DefaultConcurrency)
	)
	for region, fs := range byRegion {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a := &actor{region: region, api: Counting(clients(region), &calls)}
			a.run(ctx, fs)
			mu.Lock()
			res.Done = append(res.Done, a.done...)
			res.Failed = append(res.Failed, a.failed...)
			mu.Unlock()
		})
	}
	wg.Wait()
	order := func(a, b Action) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Op, b.Op), cmp.Compare(a.ID, b.ID))
	}
	slices.SortFunc(res.Done, order)
	slices.SortFunc(res.Failed, order)
	res.APICalls, res.Calls = calls.Total(), calls.ByOperation()
	var errs []error
	for _, a := range res.Failed {
		errs = append(errs, a.err)
	}
	return res, errors.Join(errs...)
}

type actor struct {
	region       string
	api          EC2API
	done, failed []Action
}

func (a *actor) record(f Finding, op, id string, err error) {
	act := Action{Region: a.region, Op: op, ID: id, Kind: f.Kind, Res: f.Resource}
	if err != nil && !awserr.NotFound(err) {
		act.err = fmt.Errorf("%s %s in %s: %w", op, id, a.region, err)
		act.Error = err.Error()
		a.failed = append(a.failed, act)
		return
	}
	a.done = append(a.done, act)
}

func (a *actor) run(ctx context.Context, fs []Finding) {
	var insts, keys, groups, images, snaps []Finding
	for _, f := range fs {
		switch f.Resource {
		case ResInstance:
			insts = append(insts, f)
		case ResKeyPair:
			keys = append(keys, f)
		case ResSecurityGroup:
			groups = append(groups, f)
		case ResImage:
			images = append(images, f)
		case ResSnapshot:
			snaps = append(snaps, f)
		}
	}
	a.terminate(ctx, insts)
	for _, f := range keys {
		// By name: moto ignores KeyPairId.
		in := &ec2.DeleteKeyPairInput{KeyName: aws.String(f.Name)}
		if f.Name == "" {
			in = &ec2.DeleteKeyPairInput{KeyPairId: aws.String(f.ID)}
		}
		_, err := a.api.DeleteKeyPair(ctx, in)
		a.record(f, OpDeleteKeyPair, f.ID, err)
	}
	for _, f := range groups {
		a.record(f, OpDeleteGroup, f.ID, a.deleteGroup(ctx, f.ID))
	}
	// Deregister first: a snapshot is in use while an AMI names it.
	skip := map[string]bool{}
	snapFinding := map[string]Finding{}
	var snapIDs []string
	for _, f := range images {
		_, err := a.api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(f.ID)})
		a.record(f, OpDeregisterImage, f.ID, err)
		for _, sn := range f.Snapshots {
			if err != nil && !awserr.NotFound(err) {
				skip[sn] = true
				continue
			}
			if _, ok := snapFinding[sn]; !ok {
				snapFinding[sn] = Finding{Region: f.Region, Kind: f.Kind, Resource: ResSnapshot, ID: sn}
				snapIDs = append(snapIDs, sn)
			}
		}
	}
	for _, f := range snaps {
		if _, ok := snapFinding[f.ID]; !ok {
			snapFinding[f.ID] = f
			snapIDs = append(snapIDs, f.ID)
		}
	}
	for _, sn := range snapIDs {
		if skip[sn] {
			continue
		}
		_, err := a.api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sn)})
		a.record(snapFinding[sn], OpDeleteSnapshot, sn, err)
	}
}

// terminate terminates insts and waits until they are terminated.
func (a *actor) terminate(ctx context.Context, insts []Finding) {
	if len(insts) == 0 {
		return
	}
	var ids []string
	byID := map[string]Finding{}
	for _, f := range insts {
		ids = append(ids, f.ID)
		byID[f.ID] = f
	}
	var asked []string
	for chunk := range slices.Chunk(ids, 1000) {
		_, err := a.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: chunk})
		if err == nil {
			asked = append(asked, chunk...)
			continue
		}
		// One bad ID fails the batch: retry one by one.
		for _, id := range chunk {
			_, err := a.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
			switch {
			case err == nil:
				asked = append(asked, id)
			default:
				a.record(byID[id], OpTerminate, id, err)
			}
		}
	}
	w := ec2.NewInstanceTerminatedWaiter(a.api, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 2*time.Second, 15*time.Second
	})
	for chunk := range slices.Chunk(asked, 1000) {
		err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: chunk}, TerminateWait)
		for _, id := range chunk {
			if err != nil {
				err = fmt.Errorf("waiting for termination: %w", err)
			}
			a.record(byID[id], OpTerminate, id, err)
		}
	}
}

// deleteGroup deletes group id, retrying while it is in use.
func (a *actor) deleteGroup(ctx context.Context, id string) error {
	deadline := time.Now().Add(GroupWait)
	for {
		_, err := a.api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
		if awserr.Code(err) != "DependencyViolation" || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %w)", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}
