package bake

import (
	"context"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/latentworker/latentworker/fleet"
	"github.com/latentworker/latentworker/platform"
	"github.com/latentworker/latentworker/provision"
	"github.com/latentworker/latentworker/scripts"
)

// State is what a run knows, field by field; each step reads what earlier
// steps set and sets its own. It holds the temporary private key only as an
// in-memory signer and never holds the password.
type State struct {
	RunID  string
	Region string
	// Platform is the base image's platform (image.platform).
	Platform  *platform.Platform
	CallerARN string
	// SSHCIDR is who may reach the builder over SSH.
	SSHCIDR string

	// BaseAMI is the image the builder starts from; BaseName its name.
	BaseAMI, BaseName string
	// Replaces is the newest AMI this tool baked before for the worker, or "".
	Replaces string
	// RootDevice is the base image's root device name.
	RootDevice string
	// Network is where the builder runs and the address bake connects to.
	Network Network
	// ConsoleLatest: the instance type runs on the Nitro system, whose
	// GetConsoleOutput gives the latest output (Xen's refuses Latest).
	ConsoleLatest bool
	// OSName is the PRETTY_NAME of the base image's /etc/os-release.
	OSName string
	// Worker is what the scripts render and check.
	Worker scripts.Worker

	KeyName, KeyPairID string
	// Signer is the temporary key; the private key never leaves the process.
	Signer ssh.Signer
	// PublicKey is Signer's public key as an authorized_keys line.
	PublicKey string

	SecurityGroupID string

	InstanceID   string
	InstanceAddr string // the address bake connects to (Network)
	HostKeys     provision.HostKeys
	// TOFU is set when the console showed no host keys.
	TOFU bool
	// DebugKeyAdded is set when Options.DebugKey was authorized on a
	// builder kept after a failure.
	DebugKeyAdded bool

	ImageID     string
	ImageName   string
	SnapshotIDs []string
	// ImagePending is set when the wait for the image ran out while AWS
	// still reported it pending: the image is kept for --resume.
	ImagePending bool
	// ImageVerified is set once the image is available and verified (or
	// accepted unverified with NoVerify): from then on no undo removes
	// it, and a run that fails keeps it for --resume (ImageKept).
	ImageVerified bool
	// Master is the buildmaster host:port the image's worker connects
	// to: the configuration's, or a resumed image's own (fleet.TagMaster).
	Master string
	// Finished is a resumed run (Options.Resume) that had completed
	// before: its image is released, and the resume changed nothing.
	Finished bool
	// ReadySince is when a finished run's image was released (its
	// fleet.TagReady value), or "".
	ReadySince string
	// Copies are the image's copies in aws.copy_to_regions, in order;
	// CopyFailures those that did not succeed (removed).
	Copies       []*Copy
	CopyFailures []CopyFailure

	// Timings holds each finished step's duration, in order.
	Timings []Timing
	// RemoteTime is the time spent in commands on instances; WaitTime the
	// time spent waiting for EC2 (instances booting, rebooting, stopping,
	// the image being captured). The rest of a run is the tool's own.
	RemoteTime, WaitTime time.Duration
	// RemoteCommands counts the commands (and uploads) on instances.
	RemoteCommands int
	// Waits are the run's waits for a transition, in order, each with
	// when it began, when the transition was seen and how many calls it
	// took.
	Waits   []Wait
	started time.Time

	opts   Options
	labels fleet.Labels
	undo   undoStack
	// createCancels release the contexts of create calls when the run ends.
	createCancels []context.CancelFunc
	// manifestWritten: this run wrote the manifest (and may remove it).
	manifestWritten bool
	client          *provision.Client
	hostKey         ssh.HostKeyCallback
	builder         *undoItem
	targetAlgos     []string
	// attempt tells this run's create calls from an earlier attempt's
	// under the same run ID (--resume): it is part of every client token.
	attempt string
	// resumedImage is the image a resume found, not yet at stake (its
	// undo is pushed when the run starts judging it, in wait-image).
	resumedImage bool
	// verifiedBoot: the image was booted and its worker came up (this
	// run, or an earlier attempt that tagged it fleet.TagVerified).
	verifiedBoot bool
}

// ImageKept reports whether a failed run kept its image for --resume:
// still pending when its wait ran out, or verified before a later step
// failed.
func (s *State) ImageKept() bool { return s.ImageID != "" && (s.ImagePending || s.ImageVerified) }

// Timing is how long one step took.
type Timing struct {
	Step    string        `json:"step"`
	Elapsed time.Duration `json:"elapsed_ns"`
}
