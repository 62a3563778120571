#!/usr/bin/env bash
# The main job in the lab, as far as it is built: bring the lab up, find the
# newest Debian 12 AMI by filter as on AWS, launch it, log in over SSH with
# the host key taken from the console output, reboot it, log in again, and
# take everything down. Needs root (the lab boots containers).
set -euo pipefail
cd "$(dirname "$0")/.."
lab=bin/latentlab

$lab up >/dev/null
work=$(mktemp -d)
cleanup() {
	$lab down || true
	rm -rf "$work"
}
trap cleanup EXIT
eval "$($lab env)"

step() { printf '\n== %s\n' "$*" >&2; }

step "newest Debian 12 AMI (owner 136693071363, name debian-12-amd64-*)"
ami=$(aws ec2 describe-images --owners 136693071363 \
	--filters 'Name=name,Values=debian-12-amd64-*' \
	--query 'sort_by(Images,&CreationDate)[-1].[ImageId,Name]' --output text)
echo "$ami"
ami=${ami%%[[:space:]]*}

step "import a key pair and launch"
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
aws ec2 import-key-pair --key-name "demo-$$" --public-key-material "fileb://$work/key.pub" --query KeyName --output text
id=$(aws ec2 run-instances --image-id "$ami" --instance-type t3.large --key-name "demo-$$" \
	--query 'Instances[0].InstanceId' --output text)
aws ec2 describe-instances --instance-ids "$id" --query 'Reservations[0].Instances[0].[InstanceId,State.Name]' --output text
aws ec2 wait instance-running --instance-ids "$id"
ip=$(aws ec2 describe-instances --instance-ids "$id" --query 'Reservations[0].Instances[0].PublicIpAddress' --output text)
echo "$id running at $ip"

step "host keys from the console output (cloud-init's block), then SSH"
for _ in $(seq 1 50); do
	aws ec2 get-console-output --instance-id "$id" --query Output --output text >"$work/console"
	grep -q 'END SSH HOST KEY KEYS' "$work/console" && break
	sleep 0.2
done
sed -n '/BEGIN SSH HOST KEY KEYS/,/END SSH HOST KEY KEYS/p' "$work/console" |
	grep -v -- '-----' | awk -v ip="$ip" '{print ip, $1, $2}' >"$work/known_hosts"
ssh_opts=(-o "UserKnownHostsFile=$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR -i "$work/key")
ssh "${ssh_opts[@]}" "admin@$ip" 'grep PRETTY_NAME /etc/os-release; systemctl is-system-running'
before=$(ssh "${ssh_opts[@]}" "admin@$ip" cat /proc/sys/kernel/random/boot_id)
echo "boot ID $before"

step "reboot through the API; the boot ID changes"
aws ec2 reboot-instances --instance-ids "$id"
after=$before
for _ in $(seq 1 120); do
	sleep 0.5
	after=$(ssh "${ssh_opts[@]}" "admin@$ip" cat /proc/sys/kernel/random/boot_id 2>/dev/null) || continue
	[ "$after" != "$before" ] && break
done
[ "$after" != "$before" ] || { echo "the boot ID did not change" >&2; exit 1; }
echo "boot ID $after"

step "terminate"
aws ec2 terminate-instances --instance-ids "$id" --query 'TerminatingInstances[0].CurrentState.Name' --output text
aws ec2 wait instance-terminated --instance-ids "$id"
echo "$id terminated"
