#!/usr/bin/env bash
# Bakes every platform the lab proves (latentworker platforms: proved_by
# "lab") in one lab: for each, `latentworker bake --platform P` from the
# newest base image found by its AWS owner and name, then the new AMI
# booted with the AWS CLI as a master would, until the lab master sees the
# worker connect and a forced build pass on it. One line per platform with
# its wall time, then "N passed, N failed"; exit 1 if any failed.
# Needs root (the lab boots containers). PLATFORMS="a b" bakes only those.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
bin=$PWD/bin
work=$(mktemp -d)
lab=("$bin/latentlab" --config "$work/lab.toml")
# shellcheck source=hack/lib.sh
. hack/lib.sh

cleanup() {
	"${lab[@]}" down >/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

read -r -a platforms <<<"${PLATFORMS:-$("$bin/latentworker" platforms --json | python3 -c '
import json, sys
print(" ".join(p["name"] for p in map(json.loads, sys.stdin) if p["proved_by"] == "lab"))')}"
[ "${#platforms[@]}" -gt 0 ] || { echo "no platform is proved by the lab" >&2; exit 1; }

# worker_of P: the worker baked for platform P (buildbot names have no dots).
worker_of() { printf 'matrix-%s' "${1//./-}"; }

# One worker per platform, all sharing one password file.
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password")
{
	printf 'images = [%s]\n' "$(printf '"%s", ' "${platforms[@]}" | sed 's/, $//')"
	printf '[master]\n'
	for p in "${platforms[@]}"; do
		printf '[[master.workers]]\nname = "%s"\npassword_file = "%s"\n' "$(worker_of "$p")" "$work/password"
	done
} >"$work/lab.toml"

step "lab up (base images of: ${platforms[*]})"
"${lab[@]}" up >/dev/null || exit 1
eval "$("${lab[@]}" env)"

# bake_one P: bakes, boots and watches platform P's worker; its output goes
# to $work/P.log.
bake_one() {
	local p=$1 worker dir=$work/$1 ami id
	worker=$(worker_of "$p")
	mkdir -p "$dir"
	cat >"$dir/latentworker.toml" <<TOML
[worker]
name = "$worker"
master = "$LATENTLAB_MASTER_PB"
admin_name = "Matrix Admin"
admin_email = "matrix@example.com"
password_file = "$work/password"

[image]
platform = "$p"
TOML
	(cd "$dir" && "$bin/latentworker" bake --terminate-builder) >"$dir/result" || return 1
	ami=$(sed -n 's/^image_id: //p' "$dir/result")
	[ -n "$ami" ] || return 1
	id=$(boot_ami "$ami") || return 1
	wait_connected "$worker" && force_build "$worker"
	local ok=$?
	terminate "$id" || ok=1
	return $ok
}

passed=0 failed=0
for p in "${platforms[@]}"; do
	start=$SECONDS
	if bake_one "$p" >"$work/$p.log" 2>&1; then
		passed=$((passed + 1))
		printf '%-20s ok    %4ds\n' "$p" $((SECONDS - start))
	else
		failed=$((failed + 1))
		printf '%-20s FAIL  %4ds (last lines of its log:)\n' "$p" $((SECONDS - start))
		tail -n 15 "$work/$p.log" | sed 's/^/    /'
	fi
done
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
