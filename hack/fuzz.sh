#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 30s). `make test` runs
# only their seed corpora; this is the long run.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-30s}
for pkg in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for target in $(cat "$pkg"/*_test.go | grep -o "^func Fuzz[A-Za-z0-9_]*" | sed "s/func //" | sort -u); do
		echo "==> $pkg $target ($FUZZTIME)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s -parallel 1 "$pkg"
	done
done
