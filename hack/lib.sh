# Shared by the hack/stop-*.sh scripts; source it after defining log().

# stop_pid PID COMM: SIGTERM, then SIGKILL after 10 s, the process PID if it
# still runs COMM (so that a reused PID is never signalled).
stop_pid() {
	local pid=$1 comm=$2 i
	running() { kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(printf '%.15s' "$comm")" ]; }
	running || return 0
	kill -TERM "$pid"
	for i in $(seq 1 100); do running || return 0; sleep 0.1; done
	log "$comm ($pid) ignored SIGTERM; sending SIGKILL"
	kill -KILL "$pid"
}

# remove_dir DIR: unmount whatever is left under DIR, deepest first, then
# remove DIR; fails, leaving DIR, if a mount remains.
remove_dir() {
	local dir=$1 m mounts
	for _ in 1 2 3; do
		mapfile -t mounts < <(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
		[ ${#mounts[@]} -eq 0 ] && break
		for m in "${mounts[@]}"; do
			m=$(printf '%b' "$m") # mountinfo escapes spaces as \040
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
		done
	done
	if awk -v d="$dir/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
		log "mounts remain under $dir; not removing it"
		return 1
	fi
	rm -rf "$dir"
	log "stopped and removed $dir"
}
