#!/usr/bin/env bash
# Stops a containerd started by hack/start-containerd.sh DIR and removes DIR.
#
#   hack/stop-containerd.sh DIR
#
# Order: remove every pod sandbox and container through CRI (so the runc
# shims exit by themselves), kill the containerd whose PID is recorded in
# DIR/containerd.pid, kill any shim left that serves this containerd (found
# by DIR's socket on its command line, by PID), unmount what is left under
# DIR, then remove DIR. Nothing else on the machine is touched.
set -uo pipefail

BIN=${CKPT_CONTAINERD_BIN:-/opt/ckpt/containerd/bin}
log() { printf 'stop-containerd: %s\n' "$*" >&2; }
. "$(dirname "$0")/lib.sh"

DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR (a directory given to start-containerd.sh)"; exit 2; }
DIR=$(cd "$DIR" && pwd)
[ -f "$DIR/config.toml" ] || { log "$DIR was not made by start-containerd.sh (no config.toml); refusing"; exit 2; }
SOCK=$DIR/containerd.sock

PID=$(cat "$DIR/containerd.pid" 2>/dev/null || true)
alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = containerd ]; }

if alive && [ -S "$SOCK" ]; then
	crictl_() { timeout 60 "$BIN/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 30s "$@" 2>&1 | grep -v "level=warning" >&2; }
	# Containers first (crictl stops running ones with -f), then sandboxes.
	crictl_ rm -fa >/dev/null 2>&1 || log "crictl rm -fa failed"
	crictl_ rmp -fa >/dev/null 2>&1 || log "crictl rmp -fa failed"
	# Anything made outside CRI in the k8s.io namespace.
	ctr_() { timeout 60 "$BIN/ctr" --address "$SOCK" -n k8s.io "$@"; }
	for t in $(ctr_ tasks ls -q 2>/dev/null); do
		ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1
		ctr_ tasks delete -f "$t" >/dev/null 2>&1
	done
fi

[ -n "$PID" ] && stop_pid "$PID" containerd

# Shims of this containerd that are still there: their command line names
# our socket, which no other containerd uses.
for p in /proc/[0-9]*; do
	cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
	case "$cmd" in
	*containerd-shim-runc-v2*"-address $SOCK "*)
		log "killing leftover shim ${p#/proc/}"
		kill -KILL "${p#/proc/}" 2>/dev/null
		;;
	esac
done

# Unmount whatever is left under DIR, deepest first, and remove DIR.
remove_dir "$DIR"
