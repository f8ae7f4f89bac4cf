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
DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR (a directory given to start-kube.sh)"; exit 2; }
DIR=$(cd "$DIR" && pwd)
[ -d "$DIR/pids" ] || { log "$DIR was not made by start-kube.sh (no pids/); refusing"; exit 2; }

# stop NAME: TERM, then KILL after 10 s, the PID in pids/NAME.pid, if that
# process still runs the binary it was started as.
stop() {
	local f=$DIR/pids/$1.pid pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(printf '%.15s' "$1")" ]; then
		kill -TERM "$pid"
		for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && { log "$1 ($pid) ignored SIGTERM; SIGKILL"; kill -KILL "$pid"; }
	fi
	rm -f "$f"
}
for p in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$p"; done

if [ -f "$DIR/containerd/config.toml" ]; then
	"$REPO/hack/stop-containerd.sh" "$DIR/containerd" || log "stop-containerd.sh failed"
fi

for _ in 1 2 3; do
	mapfile -t mounts < <(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
	[ ${#mounts[@]} -eq 0 ] && break
	for m in "${mounts[@]}"; do
		m=$(printf '%b' "$m")
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done
done
if awk -v d="$DIR/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
	log "mounts remain under $DIR; not removing it"
	exit 1
fi
rm -rf "$DIR"
log "stopped and removed $DIR"
