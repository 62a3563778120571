#!/bin/sh
# latentworker-refresh: the guide's periodic update of a latent worker, for
# cron or systemd. Bakes a new AMI from the worker's newest one
# (bake --from-previous: updates and reboot), then keeps the newest KEEP AMIs
# of the worker and prunes older ones, and prints for the buildmaster admins
# exactly what changed, so that cron mails it. A failure prints why and
# exits non-zero (mailed the same way); nothing is left behind by bake.
# Environment: LATENTWORKER_CONFIG (the config file), KEEP (default 3),
# AWS credentials; the password as bake reads it (worker.password_file).
set -eu
config=${LATENTWORKER_CONFIG:-/etc/latentworker/latentworker.toml}
keep=${KEEP:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case $config in /*) ;; *) config=$PWD/$config ;; esac
cd "$work"
if ! latentworker bake -c "$config" --from-previous --terminate-builder >"$work/result" 2>"$work/log"; then
	echo "latentworker refresh FAILED; the end of its log:"
	tail -n 40 "$work/log"
	exit 1
fi
ami=$(sed -n 's/^image_id: //p' "$work/result")
old=$(sed -n 's/^replaces: //p' "$work/result")
region=$(sed -n 's/^region: //p' "$work/result")
manifest=$(sed -n 's/^manifest: //p' "$work/result")
worker=$(sed -n 's/^ *"worker": "\(.*\)",$/\1/p' "$manifest")

echo "The latent worker ${worker:-(see $config)} has a new AMI."
echo "  region:  $region"
echo "  new AMI: $ami"
[ -z "$old" ] || echo "  it replaces: $old"
echo "Please tell the buildmaster admins the new AMI ID (or, with a self-finding handoff, nothing to do)."

if [ -n "$worker" ]; then
	latentworker sweep --region "$region" --worker "$worker" --prune-images --keep "$keep" --terminate --yes >"$work/prune" 2>&1 || true
	[ ! -s "$work/prune" ] || { echo "Image retention (keeping $keep):"; cat "$work/prune"; }
fi
