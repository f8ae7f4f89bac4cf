#!/usr/bin/env bash
# Installs what `make bench` needs beyond hack/install-deps.sh: Debian 12's
# Podman 4.3.1 (the field's Podman row), configured so that it checkpoints
# with CRIU here, plus containerd 2.4 and crictl (via hack/start-containerd.sh,
# which installs them on first use). Idempotent; run as root.
#
# Podman needs default_ulimits in containers.conf: by default it asks runc for
# nofile=1048576, which this machine (no CAP_SYS_RESOURCE, hard limit lower)
# refuses ("error setting rlimit type 7"), and likewise nproc (type 6).
# Podman must use the CRIU that passes `criu check` (/usr/local/sbin/criu,
# see hack/install-deps.sh), so PATH puts /usr/local/sbin first.
set -euo pipefail

log() { printf '==> %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "install-bench-deps: must run as root" >&2; exit 1; }

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v conmon >/dev/null 2>&1 || need+=(conmon)
command -v time >/dev/null 2>&1 || true
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]} from Debian 12"
	apt-get update -qq
	# Podman's recommends pull in crun, slirp4netns, fuse-overlayfs...; runc is
	# the OCI runtime of every row, so only what podman needs is installed.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman conmon catatonit >/dev/null
fi
log "podman: $(podman --version)"

conf=/etc/containers/containers.conf
mkdir -p /etc/containers
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
# conmon's hard nproc limit can be lower than this shell's; 4096 processes
# is plenty for a benchmark container and always below it.
nproc=4096
line="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
if grep -q '^[[:space:]]*default_ulimits' "$conf" 2>/dev/null; then
	sed -i "s|^[[:space:]]*default_ulimits.*|$line|" "$conf"
elif grep -q '^\[containers\]' "$conf" 2>/dev/null; then
	sed -i "/^\[containers\]/a $line" "$conf"
else
	printf '[containers]\n%s\n' "$line" >>"$conf"
fi
log "containers.conf: $line"
if ! grep -q '^[[:space:]]*runtime[[:space:]]*=' "$conf"; then
	if grep -q '^\[engine\]' "$conf"; then
		sed -i '/^\[engine\]/a runtime = "runc"' "$conf"
	else
		printf '[engine]\nruntime = "runc"\n' >>"$conf"
	fi
fi
