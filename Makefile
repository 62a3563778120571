# latentworker — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
LAB := $(BIN)/latentlab
# The lab keeps its state and base-image cache outside the repo.
LATENTLAB_STATE ?= /var/lib/latentlab
LATENTLAB_CACHE ?= /var/cache/latentlab
export LATENTLAB_STATE LATENTLAB_CACHE

.PHONY: help build test test-short e2e demo bake-matrix bench-matrix bench-bake bench-sweep lint check update-golden deps clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build latentworker and latentlab into bin/
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/...

test: deps ## run every test (installs what the lab needs first; the lab tests need root)
	$(GO) test -count=1 -timeout 60m ./...

test-short: ## the fast loop: every test that starts no lab (about two minutes)
	$(GO) test -short -count=1 ./...

e2e: ## the end-to-end tests in the lab: the lab, bake (library and command line; the pip path; the RPM configure half), interruptions, handoff to a real master, sweep
	$(GO) test -count=1 -timeout 60m -run 'TestLab|TestReleases|TestDownAfterCrash|E2E|TestBakeCLI|TestBakeInterrupted|TestCancelAtStepBoundaries|TestValidateAgainstLab|TestBakeKeepOnFailure|TestHandoffCLI|TestSweepAfterKilledBake|TestHandedOffMaster|TestRPMConfigureHalf' ./lab/ ./bake/ ./cmd/...

bench-sweep: ## one sweep over 17 regions x 2000 instances in moto, against a per-region aws ec2 describe-instances loop
	SWEEP_BENCH_REGIONS=17 SWEEP_BENCH_INSTANCES=2000 SWEEP_BENCH_AWSCLI=1 $(GO) test -count=1 -timeout 60m -run '^$$' -bench BenchmarkFind -benchtime 1x ./cleanup/

bench-matrix: ## N bakes (MATRIX_N, default 4) in one lab one after another, then all at once: both wall times and their ratio
	$(GO) test -count=1 -timeout 90m -run '^$$' -bench BenchmarkMatrix -benchtime 1x ./bake/

bench-bake: ## bake in the lab and split its wall time: remote commands, waits for EC2, the tool's overhead
	$(GO) test -count=1 -timeout 30m -run '^$$' -bench BenchmarkBake -benchtime 3x ./bake/

bake-matrix: deps build ## bake every platform the lab proves (and the pip path, and a bare worker), boot each AMI, build CPython on it; bake and build times
	hack/bake-matrix.sh

demo: deps build ## the main job (installs what the lab needs first) in the lab: bake a worker AMI, boot it, see the worker connect and build CPython
	hack/demo.sh

lint: ## gofmt, go vet, shellcheck, and a real PowerShell parse of the Windows templates and scripts
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	shellcheck -s bash -x .ci/run .ci/install-deps hack/*.sh
	shellcheck -s sh scripts/schedule/*.sh
	hack/pslint.sh

update-golden: ## rewrite golden files from the current output (the packages that keep any)
	$(GO) test $$(grep -rl 'flag.Bool("update"' --include='*_test.go' . | xargs -n1 dirname | sort -u) -run Golden -update

check: lint test ## everything CI runs

deps: ## install the Debian packages the lab and tests need (root)
	bash .ci/install-deps

clean: ## remove build output
	rm -rf $(BIN)
