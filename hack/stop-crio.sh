#!/usr/bin/env bash
# Stops a CRI-O started by hack/start-crio.sh DIR and removes DIR.
#
#   hack/stop-crio.sh DIR
#
# Order: note every sandbox and container ID, remove them through CRI (so
# conmon and the containers exit), kill the crio whose PID is in DIR/crio.pid,
# kill any conmon left that serves this crio (found by DIR on its command
# line, by PID), stop the private registry, remove the cgroups named by the
# noted IDs that are left, unmount what is left under DIR, remove DIR.
# Nothing else on the machine is touched.
set -uo pipefail

CRIO_VERSION=${CRIO_VERSION:-v1.34.0}
BIN=${CKPT_CRIO_PREFIX:-/opt/ckpt/crio/$CRIO_VERSION}/bin
REPO=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'stop-crio: %s\n' "$*" >&2; }
. "$(dirname "$0")/lib.sh"

DIR=${1:-}
[ -n "$DIR" ] && [ -d "$DIR" ] || { log "usage: $0 DIR (a directory given to start-crio.sh)"; exit 2; }
DIR=$(cd "$DIR" && pwd)
[ -f "$DIR/crio.conf.marker" ] || { log "$DIR was not made by start-crio.sh (no crio.conf.marker); refusing"; exit 2; }
SOCK=$DIR/crio.sock

PID=$(cat "$DIR/crio.pid" 2>/dev/null || true)
alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && [ "$(cat "/proc/$PID/comm" 2>/dev/null)" = crio ]; }

ids=()
if alive && [ -S "$SOCK" ]; then
	crictl_() { timeout 120 "$BIN/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s "$@" 2>/dev/null; }
	mapfile -t ids < <({ crictl_ ps -aq --no-trunc; crictl_ pods -q --no-trunc; } | grep -E '^[0-9a-f]{64}$')
	crictl_ rm -fa >/dev/null || log "crictl rm -fa failed"
	crictl_ rmp -fa >/dev/null || log "crictl rmp -fa failed"
fi
# IDs CRI-O knows from its storage, in case CRI did not answer, and every
# ID its log names (containers already removed, such as a failed restore,
# can leave a crio-conmon-ID cgroup behind).
for d in "$DIR"/root/overlay-containers/*/; do
	[ -d "$d" ] && ids+=("$(basename "$d")")
done
if [ -f "$DIR/crio.log" ]; then
	mapfile -t -O ${#ids[@]} ids < <(grep -oE '\b[0-9a-f]{64}\b' "$DIR/crio.log" | sort -u)
fi

[ -n "$PID" ] && stop_pid "$PID" crio

# conmon processes of this crio: their command line names DIR.
for p in /proc/[0-9]*; do
	[ "$(cat "$p/comm" 2>/dev/null)" = conmon ] || continue
	cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
	case "$cmd" in
	*" $DIR/"*)
		log "killing leftover conmon ${p#/proc/}"
		kill -KILL "${p#/proc/}" 2>/dev/null
		;;
	esac
done

[ -f "$DIR/registry/config.yml" ] && "$REPO/hack/stop-registry.sh" "$DIR/registry"

# Cgroups CRI-O made for these pods and containers (cgroupfs: crio-ID,
# crio-conmon-ID, pod_ID); leaves first. Processes still in one are killed.
if [ ${#ids[@]} -gt 0 ]; then
	pattern=$(printf '%s\n' "${ids[@]}" | sort -u | paste -sd'|')
	mapfile -t cgs < <(find /sys/fs/cgroup -mindepth 2 -maxdepth 6 -type d 2>/dev/null | grep -E "($pattern)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
	for cg in "${cgs[@]}"; do
		while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$cg/cgroup.procs" 2>/dev/null
		rmdir "$cg" 2>/dev/null || { sleep 0.2; rmdir "$cg" 2>/dev/null; } || log "cannot remove cgroup $cg"
	done
fi

# CRI-O's parent for pods without a cgroup parent (the kubelet always sets
# one): removed when empty; rmdir fails while another CRI-O uses it.
for cg in /sys/fs/cgroup/*/crio; do
	[ -d "$cg" ] && rmdir "$cg" 2>/dev/null
done

# Unmount whatever is left under DIR, deepest first, and remove DIR.
remove_dir "$DIR"
