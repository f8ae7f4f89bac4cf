#!/usr/bin/env bash
# Stops a registry started by hack/start-registry.sh PORT DIR and removes DIR.
#
#   hack/stop-registry.sh DIR
set -uo pipefail
log() { printf 'stop-registry: %s\n' "$*" >&2; }
DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR"; exit 2; }
[ -f "$DIR/config.yml" ] || { log "$DIR was not made by start-registry.sh (no config.yml); refusing"; exit 2; }
PID=$(cat "$DIR/registry.pid" 2>/dev/null || true)
alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = docker-registry ]; }
if alive; then
	kill -TERM "$PID"
	for _ in $(seq 1 50); do alive || break; sleep 0.1; done
	alive && kill -KILL "$PID"
fi
rm -rf "$DIR"
log "stopped and removed $DIR"
