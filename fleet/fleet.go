// Package fleet is the small vocabulary shared by bake, handoff and sweep:
// the tag keys and values latentworker puts on what it creates, run IDs,
// AMI names that sort by date and the names of temporary resources.
//
// Bake writes these tags at creation (TagSpecifications), so sweep can
// always find what a run made by reading them back. The package makes no
// AWS call and owns nothing else.
package fleet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tag keys latentworker sets on everything it creates. They all start with
// Prefix, which user tags may not use.
const (
	Prefix     = "latentworker:"
	TagRunID   = Prefix + "run-id"  // the run that created the resource (NewRunID)
	TagWorker  = Prefix + "worker"  // the buildbot worker name
	TagRole    = Prefix + "role"    // a Role
	TagCreator = Prefix + "creator" // the STS caller ARN of the run
	TagExpires = Prefix + "expires" // RFC 3339 time after which a temporary resource is a leftover
	// TagLease, on a bake run's temporary key pair, is the RFC 3339 time
	// until which the run is surely alive: the run renews it while it
	// runs, so a run that stopped renewing it is dead and its resources
	// are leftovers, whatever their age.
	TagLease     = Prefix + "lease"
	TagSourceAMI = Prefix + "source-ami" // the image the builder started from
	TagReplaces  = Prefix + "replaces"   // the previous AMI of the worker, on an image
	TagName      = "Name"                // the console's name column
	// TagCopyOf and TagSourceRegion are set on an AMI copied to another
	// region (aws.copy_to_regions): the AMI it copies and that AMI's
	// region, where its run's temporary key pair (and lease) is.
	TagCopyOf       = Prefix + "copy-of"
	TagSourceRegion = Prefix + "source-region"
	// TagHandedOff is set on an AMI when it is handed off (RFC 3339 time):
	// a worker's newest such AMI is the one its master runs, which image
	// retention never removes.
	TagHandedOff = Prefix + "handed-off"
	// TagReady is set on an AMI once its bake completed (RFC 3339 time):
	// the image is available, verified (unless the bake was told not to)
	// and requires IMDSv2. A master that finds the worker's newest AMI by
	// itself may launch only images with this tag (see iam.PolicyOptions).
	TagReady = Prefix + "ready"
	// TagVerified is set on an AMI once a throwaway instance booted from
	// it ran the worker (RFC 3339 time): an unfinished run's resume need
	// not boot it again, and nothing ever removes it as a leftover.
	TagVerified = Prefix + "verified"
	// TagMaster, on an AMI, is the buildmaster host:port its worker
	// connects to, as baked in: what a handoff of that AMI reports.
	TagMaster = Prefix + "master"
)

// SafeImage reports whether an AMI with tags is one that no undo and no
// sweep ever removes as a run's leftover: verified (TagVerified), released
// (TagReady) or handed off (TagHandedOff). Only image retention
// (sweep --prune-images) removes such an AMI, and never the handed-off one.
func SafeImage(tags map[string]string) bool {
	for _, k := range []string{TagVerified, TagReady, TagHandedOff} {
		if _, ok := tags[k]; ok {
			return true
		}
	}
	return false
}

// Role is the value of TagRole: what a resource is for.
type Role string

// Roles of the resources a bake creates.
const (
	RoleBuilder  Role = "builder"  // the instance that is provisioned and imaged
	RoleVerify   Role = "verify"   // the throwaway instance booted from the new AMI
	RoleTempKey  Role = "temp-key" // the run's imported key pair
	RoleTempSG   Role = "temp-sg"  // the run's security group
	RoleImage    Role = "image"    // the product: the AMI
	RoleSnapshot Role = "snapshot" // the AMI's snapshots
	RoleVolume   Role = "volume"   // an instance's volumes
)

// Roles returns every role, for validating a tag read back.
func Roles() []Role {
	return []Role{RoleBuilder, RoleVerify, RoleTempKey, RoleTempSG, RoleImage, RoleSnapshot, RoleVolume}
}

// Temporary reports whether resources of role r are removed at the end of
// every run (the image and its snapshots are not: they are the product).
func (r Role) Temporary() bool {
	switch r {
	case RoleImage, RoleSnapshot, RoleBuilder:
		return false
	}
	return true
}

// runIDLayout is the time part of a run ID: UTC, sortable as text.
const runIDLayout = "20060102T150405Z"

// NewRunID returns a run ID for a run starting now: the UTC time and six
// random hex digits, e.g. "20261124T001500Z-4f2a9c". Run IDs sort by time.
func NewRunID() string {
	id, err := RunID(time.Now(), rand.Reader)
	if err != nil {
		// crypto/rand.Reader does not fail (Go 1.24+).
		panic(err)
	}
	return id
}

// RunID returns the run ID for time t with three bytes read from r.
func RunID(t time.Time, r io.Reader) (string, error) {
	var b [3]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("run ID: reading random bytes: %w", err)
	}
	return t.UTC().Format(runIDLayout) + "-" + hex.EncodeToString(b[:]), nil
}

// RunIDTime returns the time a run ID was made, to the second.
func RunIDTime(id string) (time.Time, error) {
	if len(id) != len(runIDLayout)+7 || id[len(runIDLayout)] != '-' {
		return time.Time{}, fmt.Errorf("run ID %q: want %s-XXXXXX", id, runIDLayout)
	}
	if _, err := hex.DecodeString(id[len(runIDLayout)+1:]); err != nil {
		return time.Time{}, fmt.Errorf("run ID %q: suffix is not hex", id)
	}
	t, err := time.Parse(runIDLayout, id[:len(runIDLayout)])
	if err != nil {
		return time.Time{}, fmt.Errorf("run ID %q: %w", id, err)
	}
	return t, nil
}

// AMIName is the name of an AMI baked at t for worker: PREFIX-WORKER-
// YYYYMMDD-hhmmss in UTC, so a worker's AMIs sort by date, which is how
// buildbot's EC2LatentWorker picks the newest among those that match.
func AMIName(prefix, worker string, t time.Time) string {
	return prefix + "-" + worker + "-" + t.UTC().Format("20060102-150405")
}

// AMINamePattern matches the AMI names of worker (for a DescribeImages
// name filter).
func AMINamePattern(prefix, worker string) string {
	return prefix + "-" + worker + "-????????-??????"
}

// TempName is the name of a run's temporary resources (key pair, security
// group): "latentworker-RUNID".
func TempName(runID string) string { return "latentworker-" + runID }

// Labels are the tags common to everything one run creates.
type Labels struct {
	RunID     string
	Worker    string
	Creator   string    // STS caller ARN
	Expires   time.Time // zero: no expiry tag
	SourceAMI string    // "" for none
	Replaces  string    // "" for none; set on images
	Master    string    // "" for none; the master baked in, set on images
	// Extra are the user's tags (config aws.tags); they never override
	// latentworker's own.
	Extra map[string]string
}

// Map returns the tags of a resource with role as a map, including a Name
// of name when name is not "".
func (l Labels) Map(role Role, name string) map[string]string {
	m := make(map[string]string, len(l.Extra)+8)
	maps.Copy(m, l.Extra)
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(TagName, name)
	set(TagRunID, l.RunID)
	set(TagWorker, l.Worker)
	set(TagRole, string(role))
	set(TagCreator, l.Creator)
	if !l.Expires.IsZero() {
		set(TagExpires, l.Expires.UTC().Format(time.RFC3339))
	}
	set(TagSourceAMI, l.SourceAMI)
	if role == RoleImage || role == RoleSnapshot {
		set(TagReplaces, l.Replaces)
	}
	if role == RoleImage {
		set(TagMaster, l.Master)
	}
	return m
}

// Tags returns Map as EC2 tags, sorted by key.
func (l Labels) Tags(role Role, name string) []types.Tag {
	return TagList(l.Map(role, name))
}

// TagList returns m as EC2 tags, sorted by key.
func TagList(m map[string]string) []types.Tag {
	tags := make([]types.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

// Spec returns the TagSpecification for a resource of type rt with role.
func (l Labels) Spec(rt types.ResourceType, role Role, name string) types.TagSpecification {
	return types.TagSpecification{ResourceType: rt, Tags: l.Tags(role, name)}
}

// RunFilter is the DescribeX filter that selects what run runID created.
func RunFilter(runID string) types.Filter {
	return types.Filter{Name: aws.String("tag:" + TagRunID), Values: []string{runID}}
}
