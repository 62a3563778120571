#!/usr/bin/env bash
# Bakes every platform the lab proves (latentworker platforms: proved_by
# "lab") in one lab, with the defaults (CPython's build dependencies
# included): for each, `latentworker bake --platform P` from the newest base
# image found by its AWS owner and name, then the new AMI booted with the
# AWS CLI as a master would, until the lab master sees the worker connect
# and builds CPython on it (the master's cpython builder: the lab's CPython
# repository, configure --with-pydebug, make, the optional modules,
# pythoninfo, the short test run). Then the guide's pip path (debian-12
# with image.install = "pip"), also building CPython, and a bare worker
# (debian-12 with image.cpython_build_deps = false), which must still
# connect and run the trivial build. One line per row with its bake time
# and build time (and each build's steps), then "N passed, N failed"; exit
# 1 if any failed.
# Needs root (the lab boots containers). PLATFORMS="a b" bakes only those
# (a platform name, or debian-12:pip, debian-12:bare). PARALLEL_TESTS sets
# the workers' parallel_tests (default 2, what latentworker handoff gives
# for the t3.large the instances run as; 0: unset, make without -j).
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

read -r -a rows <<<"${PLATFORMS:-$("$bin/latentworker" platforms --json | python3 -c '
import json, sys
print(" ".join(p["name"] for p in map(json.loads, sys.stdin) if p["proved_by"] == "lab"))') debian-12:pip debian-12:bare}"
[ "${#rows[@]}" -gt 0 ] || { echo "no platform is proved by the lab" >&2; exit 1; }
parallel=${PARALLEL_TESTS:-2}

# worker_of ROW: the worker baked for ROW (buildbot names have no dots or
# colons).
worker_of() { local w=${1//./-}; printf 'matrix-%s' "${w//:/-}"; }

# The releases whose base images the lab builds first.
releases=()
for r in "${rows[@]}"; do
	p=${r%%:*}
	[[ " ${releases[*]} " == *" $p "* ]] || releases+=("$p")
done

# One worker per row, all sharing one password file.
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password")
{
	printf 'images = [%s]\n' "$(printf '"%s", ' "${releases[@]}" | sed 's/, $//')"
	printf '[master]\n'
	for r in "${rows[@]}"; do
		printf '[[master.workers]]\nname = "%s"\npassword_file = "%s"\nparallel_tests = %d\n' "$(worker_of "$r")" "$work/password" "$parallel"
	done
} >"$work/lab.toml"

step "lab up (base images of: ${releases[*]}; parallel_tests = $parallel)"
"${lab[@]}" up >/dev/null || exit 1
eval "$("${lab[@]}" env)"

# bake_one ROW: bakes ROW's worker (bake time in $work/ROW.bake), boots the
# AMI and builds on it (the build's steps in $work/ROW.build); its output
# goes to $work/ROW.log.
bake_one() {
	local r=$1 p=${1%%:*} kind=${1#*:} worker dir=$work/$1 ami id start builder=cpython
	[ "$kind" != "$1" ] || kind=default
	worker=$(worker_of "$r")
	mkdir -p "$dir"
	{
		cat <<TOML
[worker]
name = "$worker"
master = "$LATENTLAB_MASTER_PB"
admin_name = "Matrix Admin"
admin_email = "matrix@example.com"
password_file = "$work/password"

[image]
platform = "$p"
TOML
		case $kind in
		pip) echo 'install = "pip"' ;;
		bare)
			echo 'cpython_build_deps = false'
			builder="lab-builder"
			;;
		esac
	} >"$dir/latentworker.toml"
	start=$SECONDS
	(cd "$dir" && "$bin/latentworker" bake --terminate-builder) >"$dir/result" || return 1
	echo $((SECONDS - start)) >"$work/$r.bake"
	ami=$(sed -n 's/^image_id: //p' "$dir/result")
	[ -n "$ami" ] || return 1
	id=$(boot_ami "$ami") || return 1
	"${lab[@]}" build --builder "$builder" --worker "$worker" >"$work/$r.build"
	local ok=$?
	cat "$work/$r.build"
	terminate "$id" || ok=1
	return $ok
}

passed=0 failed=0
for r in "${rows[@]}"; do
	start=$SECONDS
	if bake_one "$r" >"$work/$r.log" 2>&1; then
		passed=$((passed + 1))
		line=$(printf '%-20s ok    %5ds  bake %4ss  build %5ss (%s)' "$r" $((SECONDS - start)) "$(cat "$work/$r.bake")" \
			"$(awk '$1 == "total" { sub(/s$/, "", $3); print $3 }' "$work/$r.build")" \
			"$(awk '$1 != "total" { printf "%s%s %s", sep, $1, $3; sep = ", " }' "$work/$r.build")")
	else
		failed=$((failed + 1))
		line=$(printf '%-20s FAIL  %5ds (last lines of its log:)\n%s' "$r" $((SECONDS - start)) "$(tail -n 25 "$work/$r.log" | sed 's/^/    /')")
	fi
	printf '%s\n' "$line"
done
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
