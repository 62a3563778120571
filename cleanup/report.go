package cleanup

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Kind is what a finding is.
type Kind string

// Kinds of findings.
const (
	KindZombie   Kind = "zombie"   // a worker's instance that outlived MaxAge or its master connection
	KindLeftover Kind = "leftover" // something a bake run left behind
	KindPrune    Kind = "prune"    // an older AMI of a worker, beyond the newest Keep
)

// Resource is the type of AWS resource a finding names.
type Resource string

// Resource types.
const (
	ResInstance      Resource = "instance"
	ResKeyPair       Resource = "key-pair"
	ResSecurityGroup Resource = "security-group"
	ResImage         Resource = "image"
	ResSnapshot      Resource = "snapshot"
)

// Finding is one resource to remove and why.
type Finding struct {
	Region   string   `json:"region"`
	Kind     Kind     `json:"kind"`
	Resource Resource `json:"resource"`
	// ID is the resource ID (for a key pair its key pair ID, or its name
	// when the endpoint reports no ID).
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Worker string `json:"worker,omitempty"`
	RunID  string `json:"run_id,omitempty"`
	State  string `json:"state,omitempty"`
	// Since is when the resource's age starts (instances: the primary
	// interface's attach time; others: creation or the run's start);
	// Age is Now minus Since.
	Since  time.Time     `json:"since,omitzero"`
	Age    time.Duration `json:"age_ns,omitempty"`
	Reason string        `json:"reason"`
	// SecurityGroups are an instance's groups; Snapshots an image's
	// snapshots (deleted with it).
	SecurityGroups []string `json:"security_groups,omitempty"`
	Snapshots      []string `json:"snapshots,omitempty"`
}

// Report is what Find or PlanPrune found.
type Report struct {
	Regions  []string  `json:"regions"`
	Findings []Finding `json:"findings"`
	// Warnings are things the search could not do (a filter the endpoint
	// does not support, a buildmaster that did not answer). They are not
	// findings; the CLI prints them on stderr.
	Warnings []string `json:"warnings,omitempty"`
	// APICalls is the number of EC2 calls made, Calls the same by
	// operation; Elapsed the wall time of the search.
	APICalls int64            `json:"api_calls"`
	Calls    map[string]int64 `json:"calls,omitempty"`
	Elapsed  time.Duration    `json:"elapsed_ns"`
}

// Counts are a report's findings by kind.
type Counts struct {
	Zombies   int `json:"zombies"`
	Leftovers int `json:"leftovers"`
	Prunable  int `json:"prunable"`
}

// Total is the number of findings.
func (c Counts) Total() int { return c.Zombies + c.Leftovers + c.Prunable }

// Counts counts the findings by kind.
func (r *Report) Counts() Counts {
	var c Counts
	for _, f := range r.Findings {
		switch f.Kind {
		case KindZombie:
			c.Zombies++
		case KindLeftover:
			c.Leftovers++
		case KindPrune:
			c.Prunable++
		}
	}
	return c
}

// Exit codes of latentworker sweep.
const (
	ExitNothing = 0 // nothing found
	ExitFound   = 1 // found, report only
	ExitError   = 2 // an error (also: acting failed for some finding)
	ExitActed   = 3 // found and acted
)

// ExitCode maps a sweep's outcome to its exit code: err (from Find, Act or
// PruneImages) wins, then found with or without acting.
func ExitCode(found int, acted bool, err error) int {
	switch {
	case err != nil:
		return ExitError
	case found == 0:
		return ExitNothing
	case acted:
		return ExitActed
	}
	return ExitFound
}

func (r *Report) sort() {
	slices.SortFunc(r.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.ID, b.ID))
	})
	slices.Sort(r.Warnings)
}

// WriteText writes one line per finding:
//
//	REGION  KIND  RESOURCE ID  age AGE  REASON
//
// and nothing at all when there is none, so a cron job mails only problems.
// Warnings are not written (see Report.Warnings).
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%s\t%s\t%s %s", f.Region, f.Kind, f.Resource, f.ID)
		if f.Name != "" && f.Name != f.ID {
			fmt.Fprintf(&b, " (%s)", f.Name)
		}
		if f.Age > 0 {
			fmt.Fprintf(&b, "\tage %s", Round(f.Age))
		}
		fmt.Fprintf(&b, "\t%s\n", f.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes newline-delimited JSON: one {"type":"finding",...}
// object per finding, one {"type":"warning","message":...} per warning,
// then always one {"type":"summary",...} object with the counts, regions
// and API calls.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, f := range r.Findings {
		if err := enc.Encode(struct {
			Type string `json:"type"`
			Finding
		}{"finding", f}); err != nil {
			return err
		}
	}
	for _, m := range r.Warnings {
		if err := enc.Encode(struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}{"warning", m}); err != nil {
			return err
		}
	}
	return enc.Encode(struct {
		Type string `json:"type"`
		Counts
		Regions  []string         `json:"regions"`
		APICalls int64            `json:"api_calls"`
		Calls    map[string]int64 `json:"calls,omitempty"`
		Elapsed  time.Duration    `json:"elapsed_ns"`
	}{"summary", r.Counts(), r.Regions, r.APICalls, r.Calls, r.Elapsed})
}

// Round shortens d for people: minutes above an hour, seconds below.
func Round(d time.Duration) time.Duration {
	if d >= time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}
