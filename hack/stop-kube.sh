#!/usr/bin/env bash
# Stops a cluster started by hack/start-kube.sh DIR and removes DIR.
#
#   hack/stop-kube.sh DIR
#
# Kills exactly the processes whose PIDs are in DIR/pids (kubelet first,
# etcd last), stops the containerd in DIR/containerd with
# hack/stop-containerd.sh, unmounts what the kubelet left under DIR, and
# removes DIR. Nothing else on the machine is touched.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'stop-kube: %s\n' "$*" >&2; }
. "$(dirname "$0")/lib.sh"
DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR (a directory given to start-kube.sh)"; exit 2; }
DIR=$(cd "$DIR" && pwd)
[ -d "$DIR/pids" ] || { log "$DIR was not made by start-kube.sh (no pids/); refusing"; exit 2; }

# stop NAME: stop the PID in pids/NAME.pid if it still runs NAME.
stop() {
	local f=$DIR/pids/$1.pid
	[ -f "$f" ] || return 0
	stop_pid "$(cat "$f")" "$1"
	rm -f "$f"
}
for p in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$p"; done

if [ -f "$DIR/containerd/config.toml" ]; then
	"$REPO/hack/stop-containerd.sh" "$DIR/containerd" || log "stop-containerd.sh failed"
fi

# Unmount whatever is left under DIR, deepest first, and remove DIR.
remove_dir "$DIR"
