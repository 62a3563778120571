// Package cleanup owns sweeping: finding and removing the zombie instances
// of buildbot latent workers, the leftovers of bake runs, and retaining a
// worker's newest AMIs while pruning older ones. It does not bake anything
// (package bake does), it does not create IAM identities or handoff bundles,
// and it does not parse flags or print progress: cmd/latentworker's sweep
// command does, from the Report and Result values returned here.
//
// # What it looks at
//
// Only resources this tool or the handoff tagged, or instances that are
// provably a worker's: launched from an AMI tagged role=image by bake, or
// carrying the handoff tag latentworker:worker, or running with the
// worker's instance profile "latentworker-WORKER". A resource that carries
// Options.ProtectTag (any value) is never reported and never touched,
// whatever the options. Every query uses server-side filters (tag-key,
// tag:KEY, image-id, instance-state-name, iam-instance-profile.arn) and the
// SDK paginators; the launch-time filter is never used (moto returns 500).
//
// # Zombies
//
// A zombie is an instance of a worker that is not part of a bake run (it
// has no latentworker:run-id tag) and is pending, running, stopping or
// stopped, and either
//   - has been up longer than Options.MaxAge, measured from the attach
//     time of its primary network interface (device index 0), which EC2
//     sets at launch and keeps across stop/start, unlike LaunchTime; the
//     LaunchTime is used only when the interface reports no attach time; or
//   - with Options.MasterURL, belongs to a worker the buildmaster reports as
//     not connected (GET /api/v2/workers/NAME has an empty connected_to)
//     and has been up longer than Options.Grace.
//
// With Options.MasterURL, an instance whose worker the buildmaster reports
// as connected is never a zombie, whatever its age: back-to-back builds keep
// a latent worker's instance up for as long as they come, and MaxAge must
// not kill one mid-build. MaxAge then applies only to instances whose
// worker is not connected. The master does not say which instance a
// connected worker runs on: when such a worker has several instances past
// MaxAge in a region, none is removed and the report warns. If the
// buildmaster cannot be asked (it may be the thing that died), the report
// carries a warning and only MaxAge applies.
//
// # Leftovers
//
// Leftovers are resources tagged latentworker:run-id by a bake run, with
// the role bake gives them (builder, verify, temp-key, temp-sg, image,
// snapshot): a resource with a run ID and another role (a handoff's key
// pair or group, say) is never judged as a bake leftover. A run is judged
// by what it left in the region:
//   - live: its temporary key pair still exists and carries a
//     latentworker:lease in the future (a run renews it while it runs),
//     whatever the run's age; or, for a key pair without a lease, the run
//     is younger than MaxAge (its age is the time in its run ID) and not
//     past its latentworker:expires tag. Nothing of a live run is a
//     leftover.
//   - abandoned: its temporary key pair still exists and its lease has
//     ended (the run stopped renewing it: it was killed), or, without a
//     lease, the run is older than MaxAge or past expiry. Every run deletes its temporary key pair
//     when it ends, successful or not, so a key pair that outlives MaxAge
//     means the run was killed (or its cleanup failed). Everything of an
//     abandoned run is a leftover: builder and verify instances, key pair,
//     security group, AMIs in any state and their snapshots.
//   - ended: its temporary key pair is gone. Of an ended run, a verify
//     instance is a leftover at once; the builder instance (kept stopped by
//     a successful bake, or running after --keep-on-failure) and the
//     security group it uses are leftovers only once past their expiry tag;
//     a security group that no instance of the run uses any more is a
//     leftover at once; an AMI that is not available (pending, failed,
//     invalid, error) is a leftover, and snapshots whose AMI no longer
//     exists are leftovers.
//
// Anything past its expiry tag is a leftover too, except an available AMI
// of an ended run and its snapshots: a completed bake's AMI is the product
// and is never a leftover. Neither is an AMI listed in Options.KeepImages
// (the CLI passes the AMI of the last handoff), nor its snapshots.
// Detached volumes (role=volume) are not looked at: bake launches with
// DeleteOnTermination, so they go with their instance.
//
// # Acting
//
// Act removes what a Report lists, region by region in parallel: it
// terminates instances and waits until they are terminated, then deletes
// key pairs and security groups (retrying while a group is still in use),
// then deregisters AMIs and deletes their snapshots. It continues past
// failures; the Result lists each action done and each failure with the
// AWS error.
//
// # Image retention
//
// PlanPrune reports, per region, a worker's available AMIs (role=image)
// beyond the newest Keep by creation date, never one listed in Protect or
// carrying the protect tag; PruneImages plans and acts.
package cleanup
