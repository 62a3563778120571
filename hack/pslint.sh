#!/usr/bin/env bash
# Parses every PowerShell script latentworker renders, and its PowerShell
# templates themselves, with tree-sitter's PowerShell grammar (hack/pslint),
# and fails naming the file and line of each syntax error (make lint).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d hack/pslint/node_modules/web-tree-sitter ] || [ ! -d hack/pslint/node_modules/tree-sitter-powershell ]; then
	echo "hack/pslint: its npm packages are missing; run make deps (npm ci in hack/pslint)" >&2
	exit 1
fi

# The templates (read as PowerShell at their own lines) and what they
# render to for a plain and a hostile worker, in one run: loading the
# grammar costs seconds.
out=bin/pslint
rm -rf "$out"
go run ./hack/renderps "$out"
node hack/pslint/pslint.cjs scripts/windows/*.ps1.tmpl "$out"/*.ps1
echo "pslint: $(find scripts/windows -name '*.ps1.tmpl' | wc -l) templates and $(find "$out" -name '*.ps1' | wc -l) rendered scripts parse" >&2
