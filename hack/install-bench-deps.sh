#!/usr/bin/env bash
# Installs what `make bench` needs beyond hack/install-deps.sh: Debian 12's
# Podman 4.3.1 (the field's Podman row), configured so that it checkpoints
# with CRIU here, plus containerd 2.4 and crictl (via hack/start-containerd.sh,
# which installs them on first use). Idempotent; run as root.
#
# Podman needs default_ulimits in containers.conf: without it containers get
# the host's nofile limit and CRIU's restore of the fd table fails here.
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
if ! grep -q '^[[:space:]]*default_ulimits' "$conf" 2>/dev/null; then
	log "setting default_ulimits in $conf"
	if grep -q '^\[containers\]' "$conf" 2>/dev/null; then
		sed -i '/^\[containers\]/a default_ulimits = ["nofile=1048576:1048576"]' "$conf"
	else
		printf '[containers]\ndefault_ulimits = ["nofile=1048576:1048576"]\n' >>"$conf"
	fi
fi
if ! grep -q '^[[:space:]]*runtime[[:space:]]*=' "$conf"; then
	if grep -q '^\[engine\]' "$conf"; then
		sed -i '/^\[engine\]/a runtime = "runc"' "$conf"
	else
		printf '[engine]\nruntime = "runc"\n' >>"$conf"
	fi
fi
