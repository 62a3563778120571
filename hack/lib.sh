# Shared by hack/demo.sh and hack/bake-matrix.sh: the lab master's REST API
# and the AWS CLI as a buildmaster would use them. Source it after
# `eval "$(latentlab env)"`.

step() { printf '\n== %s\n' "$*" >&2; }

# json CONDITION: reads a REST answer on stdin, exits 0 if the Python
# expression over it (d) holds.
json() { python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }

master_api() { printf '%s/api/v2' "${LATENTLAB_MASTER_URL%/}"; }

# boot_ami AMI: runs an instance of AMI with the AWS CLI, as the master's
# EC2LatentWorker would (BOOT_ARGS: more arguments, e.g. --subnet-id),
# waits until it runs and prints its ID.
boot_ami() {
	local id
	# shellcheck disable=SC2086 # BOOT_ARGS are words
	id=$(aws ec2 run-instances --image-id "$1" --instance-type t3.large ${BOOT_ARGS:-} --query 'Instances[0].InstanceId' --output text)
	aws ec2 wait instance-running --instance-ids "$id"
	printf '%s\n' "$id"
}

# terminate ID: terminates the instance and waits until it is gone.
terminate() {
	aws ec2 terminate-instances --instance-ids "$1" --query 'TerminatingInstances[0].CurrentState.Name' --output text >/dev/null
	aws ec2 wait instance-terminated --instance-ids "$1"
}

# wait_connected WORKER [SECONDS]: until the master sees WORKER connected.
wait_connected() {
	local api n
	api=$(master_api)
	for n in $(seq 1 "${2:-180}"); do
		if curl -fsS "$api/workers/$1" 2>/dev/null | json 'd["workers"][0]["connected_to"]'; then
			return 0
		fi
		sleep 1
	done
	echo "worker $1 did not connect within ${2:-180}s (last try $n)" >&2
	return 1
}
