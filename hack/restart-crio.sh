#!/usr/bin/env bash
# Restarts a CRI-O started by hack/start-crio.sh DIR: SIGTERM to the PID in
# DIR/crio.pid (containers keep running under conmon), then DIR/run-crio.
#
#   hack/restart-crio.sh DIR
set -euo pipefail
log() { printf 'restart-crio: %s\n' "$*" >&2; }
DIR=${1:-}
[ -n "$DIR" ] && [ -x "$DIR/run-crio" ] && [ -f "$DIR/crio.conf.marker" ] || { log "usage: $0 DIR (a directory given to start-crio.sh)"; exit 2; }
PID=$(cat "$DIR/crio.pid")
alive() { kill -0 "$PID" 2>/dev/null && [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = crio ]; }
if alive; then
	kill -TERM "$PID"
	for _ in $(seq 1 300); do alive || break; sleep 0.1; done
	alive && { log "crio $PID did not stop"; exit 1; }
fi
"$DIR/run-crio"
log "crio restarted, pid $(cat "$DIR/crio.pid")"
