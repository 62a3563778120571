package bake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/latentworker/latentworker/fleet"
)

// Manifest describes a baked AMI. It never holds a secret.
type Manifest struct {
	ImageID      string   `json:"image_id"`
	ImageName    string   `json:"image_name"`
	Region       string   `json:"region"`
	SnapshotIDs  []string `json:"snapshot_ids"`
	SourceAMI    string   `json:"source_ami"`
	SourceName   string   `json:"source_name"`
	FromPrevious bool     `json:"from_previous"`
	Replaces     string   `json:"replaces,omitempty"`
	Worker       string   `json:"worker"`
	Master       string   `json:"master"`
	RunID        string   `json:"run_id"`
	Creator      string   `json:"creator"`
	Builder      string   `json:"builder_instance,omitempty"` // "" when terminated
	Verified     bool     `json:"verified"`
	// Copies are the image's copies in other regions: region -> AMI ID;
	// CopyFailures the copies that failed: region -> why (the image and
	// the other copies are kept).
	Copies       map[string]string `json:"copies,omitempty"`
	CopyFailures map[string]string `json:"copy_failures,omitempty"`
	// Encrypted: the image's snapshots (and its copies') are encrypted;
	// KMSKeyID the key asked for in Region ("" its default EBS key).
	Encrypted bool      `json:"encrypted,omitempty"`
	KMSKeyID  string    `json:"kms_key_id,omitempty"`
	Created   time.Time `json:"created"`
	Timings   []Timing  `json:"timings"`
	// WallTime is the whole run; RemoteTime the part in commands on the
	// instances; WaitTime the part waiting for EC2 (boots, reboots, stop,
	// image capture). What is left is the tool's own overhead.
	WallTime   time.Duration `json:"wall_ns"`
	RemoteTime time.Duration `json:"remote_ns"`
	WaitTime   time.Duration `json:"wait_ns"`
	// RemoteCommands is how many commands RemoteTime is made of.
	RemoteCommands int `json:"remote_commands"`
	// Waits are the run's waits, each with when the transition was seen.
	Waits []Wait `json:"waits,omitempty"`
}

// Result is what a run produced.
type Result struct {
	Manifest Manifest
	// Leftovers are resources the run did not remove: kept on purpose
	// (Kept: the builder left stopped and the security group it uses, on
	// success without TerminateBuilder or on failure with KeepOnFailure)
	// or whose undo failed. The image of a successful run is not listed.
	Leftovers []Leftover
	// State is the run's final state.
	State *State
	// Completed: every step succeeded, so the image is the product,
	// available and verified, even when the error reports leftovers that
	// cleanup could not remove or copies that failed (ErrCopy).
	Completed bool
}

func (s *State) manifest() Manifest {
	m := Manifest{
		ImageID: s.ImageID, ImageName: s.ImageName, Region: s.Region, SnapshotIDs: s.SnapshotIDs,
		SourceAMI: s.BaseAMI, SourceName: s.BaseName, FromPrevious: s.opts.FromPrevious, Replaces: s.Replaces,
		Worker: s.opts.Config.Worker.Name, Master: s.Master, RunID: s.RunID,
		Creator: s.CallerARN, Verified: s.verifiedBoot, Created: s.now().UTC(), Timings: s.Timings,
		WallTime: time.Since(s.started), RemoteTime: s.RemoteTime, WaitTime: s.WaitTime, Waits: s.Waits, RemoteCommands: s.RemoteCommands,
	}
	if !s.opts.TerminateBuilder {
		m.Builder = s.InstanceID
	}
	for _, c := range s.Copies {
		if m.Copies == nil {
			m.Copies = map[string]string{}
		}
		m.Copies[c.Region] = c.ImageID
	}
	for _, f := range s.CopyFailures {
		if m.CopyFailures == nil {
			m.CopyFailures = map[string]string{}
		}
		m.CopyFailures[f.Region] = f.Err.Error()
	}
	m.Encrypted, m.KMSKeyID = s.opts.Config.Image.IsEncrypted(), s.opts.Config.Image.KMSKeyID
	return m
}

func writeManifest(ctx context.Context, s *State) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if s.opts.ManifestPath == "" {
		return nil
	}
	b, err := json.MarshalIndent(s.manifest(), "", "  ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := os.WriteFile(s.opts.ManifestPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	s.manifestWritten = true
	return nil
}

// unwriteManifest removes the manifest this run wrote, once the run has
// failed after all: it would name an image that is rolled back. Only a
// regular file goes; a path the run did not write (an older manifest, a
// device, a FIFO) stays.
func (s *State) unwriteManifest() {
	if !s.manifestWritten {
		return
	}
	if fi, err := os.Lstat(s.opts.ManifestPath); err == nil && fi.Mode().IsRegular() {
		_ = os.Remove(s.opts.ManifestPath)
	}
}

// Run bakes an AMI. It runs the steps in order, then unwinds the undo stack
// on a detached context bounded by Timeouts.Unwind, whatever happened:
// temporary resources are removed; on failure or cancel the image and its
// snapshots are removed too, and the builder unless KeepOnFailure; on
// success the builder is left stopped unless TerminateBuilder.
//
// On error the Result still lists what was left. The error wraps the step's
// error (ctx's cause on cancel) and, when undo failed, a *LeftoverError
// naming each resource and the command that removes it.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Config == nil || opts.EC2 == nil || opts.STS == nil {
		return nil, errors.New("bake: Options.Config, EC2 and STS are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxReboots <= 0 {
		opts.MaxReboots = 3
	}
	if opts.Expiry <= 0 {
		opts.Expiry = 24 * time.Hour
	}
	p, err := opts.Config.Image.PlatformInfo()
	if err != nil {
		return nil, fmt.Errorf("bake: %w", err)
	}
	if opts.Timeouts.Image <= 0 {
		opts.Timeouts.Image = p.ImageWait
	}
	if loopback(opts.Endpoint) {
		// The lab: its transitions take seconds; notice each within one,
		// the answer's latency included.
		if opts.Timeouts.Poll <= 0 {
			opts.Timeouts.Poll = labPoll
		}
		if opts.Timeouts.MinPoll <= 0 {
			opts.Timeouts.MinPoll = labMinPoll
		}
	}
	opts.Timeouts = opts.Timeouts.withDefaults()
	steps := opts.Steps
	switch {
	case steps != nil:
	case opts.Resume != "":
		steps = ResumeSteps()
		opts.RunID = opts.Resume
	default:
		steps = Steps()
	}
	s := &State{RunID: opts.RunID, Region: opts.Region, Platform: p, Master: opts.Config.Worker.Master, opts: opts, started: time.Now()}
	s.undo.notify = s.emit
	if s.RunID == "" {
		s.RunID = fleet.NewRunID()
	}
	s.attempt = newAttempt()
	s.labels = fleet.Labels{
		RunID: s.RunID, Worker: opts.Config.Worker.Name, Master: s.Master,
		Expires: opts.Now().Add(opts.Expiry), Extra: opts.Config.AWS.Tags,
	}

	var runErr error
	for _, st := range steps {
		if err := context.Cause(ctx); err != nil {
			runErr = fmt.Errorf("cancelled before step %s: %w", st.Name, err)
			break
		}
		s.emit(Event{Type: EventStepStarted, Step: st.Name})
		start := time.Now()
		err := st.Run(ctx, s)
		elapsed := time.Since(start)
		s.Timings = append(s.Timings, Timing{Step: st.Name, Elapsed: elapsed})
		s.emit(Event{Type: EventStepFinished, Step: st.Name, Elapsed: elapsed, Err: errString(err)})
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
				err = fmt.Errorf("%w (%w)", err, cause)
			}
			runErr = fmt.Errorf("step %s: %w", st.Name, err)
			break
		}
		if s.Finished {
			break // a resume of a completed run: nothing to do
		}
	}
	// A cancel that came while the last step ran still cancels the run.
	if cause := context.Cause(ctx); runErr == nil && cause != nil {
		runErr = fmt.Errorf("cancelled as the run finished: %w", cause)
	}
	if runErr != nil {
		s.unwriteManifest()
	}
	if runErr != nil && opts.KeepOnFailure {
		s.authorizeDebugKey(ctx)
	}
	s.closeClient()
	for _, cancel := range s.createCancels {
		cancel()
	}

	ok := runErr == nil
	// An image that is available and verified is kept whatever happens
	// (its undo was marked so, see verifyImage); a pending one is kept for
	// --resume.
	keep := func(k Kind) bool {
		switch k {
		case KindImage:
			return ok || s.ImagePending
		case KindBuilder:
			if ok {
				return !opts.TerminateBuilder
			}
			return opts.KeepOnFailure
		}
		return false
	}
	left, undoErr := s.undo.unwind(ctx, opts.Timeouts.Unwind, keep)
	res := &Result{Manifest: s.manifest(), State: s, Completed: ok}
	for _, l := range left {
		if (ok || s.ImageKept()) && l.Kept && s.isProduct(l.ID) {
			continue // the product, or kept for --resume (the error says so)
		}
		res.Leftovers = append(res.Leftovers, l)
		s.emit(Event{Type: EventLeftover, Leftover: &l})
	}
	var copyErr error
	if ok {
		// The image is the product; a copy that failed is reported with it.
		copyErr = s.copyError()
	}
	return res, errors.Join(runErr, copyErr, undoErr)
}

// Check runs the preflight step alone — credentials, the base image, its
// architecture against the instance type, the instance type's size, the SSH
// CIDR — and creates nothing. It is what `latentworker validate` asks of AWS.
// The returned state holds what preflight found (CallerARN, BaseAMI,
// BaseName, Replaces, SSHCIDR).
func Check(ctx context.Context, opts Options) (*State, error) {
	opts.Steps = Steps()[:1]
	opts.ManifestPath = ""
	res, err := Run(ctx, opts)
	if res == nil {
		return nil, err
	}
	return res.State, err
}

// authorizeDebugKey adds Options.DebugKey to the login user's
// authorized_keys on a builder kept after a failure, so that its owner can
// log in: the run's own key never leaves the process and is deleted.
func (s *State) authorizeDebugKey(ctx context.Context) {
	if s.opts.DebugKey == "" || s.InstanceID == "" {
		return
	}
	if s.client == nil {
		s.warn("", fmt.Sprintf("could not add the debug key to %s: the run never logged in to it", s.InstanceID))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := s.driver("").AuthorizeKey(ctx, s.client, s.opts.DebugKey); err != nil {
		s.warn("", fmt.Sprintf("could not add the debug key to %s: %v", s.InstanceID, err))
		return
	}
	s.DebugKeyAdded = true
}

// newAttempt returns six random hex digits that tell one attempt of a run
// from another under the same run ID (--resume), for client tokens.
func newAttempt() string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// isProduct reports whether id is the image or one of its copies.
func (s *State) isProduct(id string) bool {
	if id == s.ImageID {
		return true
	}
	for _, c := range s.Copies {
		if c.ImageID == id {
			return true
		}
	}
	return false
}
