#!/usr/bin/env bash
# The main job in the lab: bring the lab up with a buildbot master that
# expects a worker, bake that worker's AMI from the newest Debian 12 AMI
# (found by filter, as on AWS; with the defaults, so with CPython's build
# dependencies), boot an instance from the new AMI with the AWS CLI as the
# master's EC2LatentWorker would, watch the worker connect to the master
# and build CPython (configure, make, the short test run), hand the AMI off
# (a least-privilege key and the admins' bundle), sweep, then take
# everything down.
# Needs root (the lab boots containers).
#
# DEMO_PROFILE picks the kind of AWS account the lab plays:
#   default    the lab as it is: a default VPC whose subnets map public IPs
#   fresh-org  a fresh account of an organisation: no default VPC, subnets
#              that map no public IP (the bake asks for one), IAM that takes
#              10 s to know a new instance profile or access key, and an
#              account ID with a leading zero (the handoff lets the master
#              find the newest AMI, valid_ami_owners with that zero)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
work=$(mktemp -d)
lab=("$bin/latentlab" --config "$work/lab.toml")
worker=demo-worker

cleanup() {
	"${lab[@]}" down || true
	rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=hack/lib.sh
. hack/lib.sh

# The worker's password: the buildmaster admins would hand it out; here the
# lab's master and the bake read it from the same 0600 file.
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password")
profile=${DEMO_PROFILE:-default}
case $profile in
default) realism= ;;
fresh-org)
	realism='[realism]
no_default_vpc = true
no_public_ips = true
iam_profile_delay = "10s"
iam_key_delay = "10s"
account_id = "012345678901"'
	;;
*)
	echo "DEMO_PROFILE=$profile: must be default or fresh-org" >&2
	exit 2
	;;
esac
cat >"$work/lab.toml" <<TOML
$realism
[master]
[[master.workers]]
name = "$worker"
password_file = "$work/password"
parallel_tests = 2   # what latentworker handoff gives for a t3.large (2 vCPUs)
TOML

step "lab up (account: $profile)"
"${lab[@]}" up >/dev/null
eval "$("${lab[@]}" env)"
network=
handoff_args=()
if [ "$profile" = fresh-org ]; then
	# No default VPC: the organisation's subnet, which maps no public IP.
	subnet=$(aws ec2 describe-subnets --query 'sort_by(Subnets, &AvailabilityZone)[0].SubnetId' --output text)
	network="subnet_id = \"$subnet\"
associate_public_ip = true"
	export BOOT_ARGS="--subnet-id $subnet"
	handoff_args=(--find-newest)
	echo "account $(aws sts get-caller-identity --query Account --output text), subnet $subnet"
fi

step "latentworker init, then the worker's settings"
cd "$work"
"$bin/latentworker" init
cat >latentworker.toml <<TOML
[worker]
name = "$worker"
master = "$LATENTLAB_MASTER_PB"   # the lab's master (users keep the default, buildbot-api.python.org:9020)
admin_name = "Demo Admin"
admin_email = "demo@example.com"
password_file = "$work/password"

[aws]
instance_type = "t3.large"
$network
TOML
"$bin/latentworker" validate

step "latentworker bake (base: newest debian-12-amd64-* owned by 136693071363)"
"$bin/latentworker" bake --terminate-builder | tee "$work/result"
ami=$(sed -n 's/^image_id: //p' "$work/result")

step "boot the new AMI with the AWS CLI, as the master would"
id=$(boot_ami "$ami")
echo "$id running"

step "the master sees the worker connect"
wait_connected "$worker"
echo "worker $worker connected"

step "the master builds CPython on it: the lab's CPython repository, configure --with-pydebug, make, the short test run"
start=$SECONDS
"${lab[@]}" build --builder cpython --worker "$worker"
echo "CPython built and tested on the worker in $((SECONDS - start))s"

step "terminate"
terminate "$id"

step "latentworker handoff: what the buildmaster admins get"
ssh-keygen -q -t ed25519 -N '' -C "demo master key" -f "$work/master-key"
"$bin/latentworker" handoff --public-key "$work/master-key.pub" "${handoff_args[@]}"

step "latentworker sweep: no zombie, nothing left by the bake (silent, exit 0)"
"$bin/latentworker" sweep --region "$AWS_REGION"
echo "sweep: exit $?"
echo "baked $ami; the lab goes down now"
