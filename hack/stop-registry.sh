#!/usr/bin/env bash
# Stops a registry started by hack/start-registry.sh PORT DIR and removes DIR.
#
#   hack/stop-registry.sh DIR
set -uo pipefail
log() { printf 'stop-registry: %s\n' "$*" >&2; }
. "$(dirname "$0")/lib.sh"
DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR"; exit 2; }
DIR=$(cd "$DIR" && pwd)
[ -f "$DIR/config.yml" ] || { log "$DIR was not made by start-registry.sh (no config.yml); refusing"; exit 2; }
PID=$(cat "$DIR/registry.pid" 2>/dev/null || true)
[ -n "$PID" ] && stop_pid "$PID" docker-registry
remove_dir "$DIR"
