#!/usr/bin/env bash
# soak.sh: the longer variant of the reliability suites (make soak).
#   load for CKPT_LOAD_SECONDS (default 60) and CKPT_KILL_TRIALS SIGKILL
#   trials (default 50), plus every fuzz target for FUZZTIME each (default
#   0 = none; e.g. FUZZTIME=1m).
# `make test` runs the bounded version (15 s of load, 20 trials).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$PATH
export CKPT_LOAD_SECONDS=${CKPT_LOAD_SECONDS:-60}
export CKPT_KILL_TRIALS=${CKPT_KILL_TRIALS:-50}
export CKPT_BIN=${CKPT_BIN:-$PWD/bin/ckpt}
export CKPT_IMAGES=${CKPT_IMAGES:-$PWD/_output/images}

go test -count=1 -v -timeout 60m \
	-run 'TestLoadMixedClients|TestAgentKilledDuringCheckpoint|TestRuntimeFailures|TestCheckpointTimeoutLargeContainer' \
	./test/e2e/ | tee "${SOAK_LOG:-/dev/null}" | grep -E 'FIGURE|^(---|===|ok|FAIL|PASS)' | grep -v '=== RUN'

fuzztime=${FUZZTIME:-0}
if [[ $fuzztime != 0 ]]; then
	# Each target alone: go test -fuzz takes one target per run.
	grep -rl --include='*_test.go' '^func Fuzz' internal | xargs -n1 dirname | sort -u | while read -r pkg; do
		for target in $(grep -h '^func Fuzz' "$pkg"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
			echo "fuzz ./$pkg $target for $fuzztime"
			go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./$pkg"
		done
	done
fi
