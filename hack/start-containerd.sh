#!/usr/bin/env bash
# Starts a private containerd 2.4 (CRI plugin, runc v2 shim, overlayfs) for
# ckpt's CRI tests, and prints its socket path.
#
#   hack/start-containerd.sh [DIR]      DIR defaults to a new /tmp/ckpt-containerd.XXXXXX
#
# Everything lives in DIR: config, root, state, runc root, CNI config, logs,
# containerd.pid. Stop it with hack/stop-containerd.sh DIR.
#
# Installs on first use (idempotent), into CKPT_CONTAINERD_BIN:
#   containerd, containerd-shim-runc-v2, ctr  (go install, containerd v2.4.2)
#   crictl                                    (go install, cri-tools v1.37.0)
# and Debian's containernetworking-plugins for the loopback CNI plugin.
#
# Networking: pods get their own network namespace with only a loopback
# interface. containerd brings "lo" up with the loopback CNI plugin, but it
# also insists on an address for "eth0" in the CNI result ("failed to find
# network info for sandbox" otherwise), so the conflist runs a tiny plugin of
# ours, ckpt-loopback-ip, that only reports 127.0.0.1 as the pod's address and
# creates nothing: no interface, bridge, route or address on the host.
#
# Images: imports CKPT_IMAGES/pause.tar and CKPT_IMAGES/counter.tar into the
# k8s.io namespace (build them with ./hack/build-images.sh _output/images).
# The sandbox image is localhost/pause:3.10.
#
# CONTAINERD_VERSION=v2.3.7 CKPT_CONTAINERD_BIN=/opt/ckpt/containerd-2.3/bin
# runs an older containerd instead, with restore through CRI enabled.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPT_CONTAINERD_BIN:-/opt/ckpt/containerd/bin}
IMAGES=${CKPT_IMAGES:-$REPO/_output/images}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
CNI_BIN=${CNI_BIN:-/usr/lib/cni}
export PATH=/usr/local/go/bin:$BIN:$PATH

log() { printf 'start-containerd: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
RUNC=$(command -v runc) || die "runc not found (run hack/install-deps.sh)"

# --- install (idempotent) ---------------------------------------------------
mkdir -p "$BIN"
# go-installed binaries carry their module version: go version -m.
modver() { go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m {print $3}'; }
have_ctrd() {
	local b
	for b in containerd containerd-shim-runc-v2 ctr; do
		[ -x "$BIN/$b" ] && [ "$(modver "$BIN/$b" github.com/containerd/containerd/v2)" = "$CONTAINERD_VERSION" ] || return 1
	done
}
if ! have_ctrd; then
	log "installing containerd $CONTAINERD_VERSION into $BIN (go install; a few minutes)"
	(cd / && GOBIN=$BIN GOFLAGS=-mod=mod go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION") >&2
	have_ctrd || die "containerd $CONTAINERD_VERSION did not install into $BIN"
fi
if [ "$(modver "$BIN/crictl" sigs.k8s.io/cri-tools)" != "$CRICTL_VERSION" ]; then
	log "installing crictl $CRICTL_VERSION into $BIN"
	(cd / && GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") >&2
fi
if ! [ -x "$CNI_BIN/loopback" ]; then
	log "installing containernetworking-plugins (for the loopback CNI plugin)"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containernetworking-plugins >&2
	[ -x "$CNI_BIN/loopback" ] || die "no loopback CNI plugin in $CNI_BIN"
fi
for img in pause counter; do
	[ -f "$IMAGES/$img.tar" ] || die "$IMAGES/$img.tar missing: run ./hack/build-images.sh _output/images (or set CKPT_IMAGES)"
done

# --- private directory and config -------------------------------------------
DIR=${1:-}
if [ -z "$DIR" ]; then
	DIR=$(mktemp -d /tmp/ckpt-containerd.XXXXXX)
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
SOCK=$DIR/containerd.sock
# sun_path holds 108 bytes; the ttrpc socket name is the longest.
[ ${#SOCK} -le 100 ] || die "directory path too long for a unix socket: $DIR"
if [ -f "$DIR/containerd.pid" ] && kill -0 "$(cat "$DIR/containerd.pid")" 2>/dev/null; then
	die "a containerd already runs for $DIR (pid $(cat "$DIR/containerd.pid"))"
fi

mkdir -p "$DIR/cni/net.d" "$DIR/cni/bin" "$DIR/logs" "$DIR/runc"
cat >"$DIR/cni/net.d/10-ckpt-loopback.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "ckpt-loopback",
  "plugins": [{"type": "ckpt-loopback-ip"}]
}
CNI
# The CNI plugin: ADD reports the pod's loopback address as its IP; every
# other command has nothing to do.
cat >"$DIR/cni/bin/ckpt-loopback-ip" <<'PLUGIN'
#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD)
	printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"interface":0,"address":"127.0.0.1/8"}]}\n' "$CNI_IFNAME" "$CNI_NETNS"
	;;
VERSION)
	echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}'
	;;
esac
PLUGIN
chmod 0755 "$DIR/cni/bin/ckpt-loopback-ip"

# containerd 2.1-2.3 restore through CRI CreateContainer only when asked to
# (2.4 removed the feature and its setting).
RESTORE_VIA_CREATE=
case "$CONTAINERD_VERSION" in
v2.[123].*) RESTORE_VIA_CREATE="    enable_experimental_restore_via_create = true" ;;
esac
cat >"$DIR/config.toml" <<TOML
# Written by hack/start-containerd.sh for ckpt's tests.
version = 3
root = "$DIR/root"
state = "$DIR/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$DIR/opt'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'localhost/pause:3.10'
  [plugins.'io.containerd.cri.v1.runtime']
    # this machine lacks CAP_SYS_RESOURCE: a negative oom_score_adj fails otherwise
    restrict_oom_score_adj = true
    # keep pod network namespaces inside DIR, not /run/netns
    netns_mounts_under_state_dir = true
$RESTORE_VIA_CREATE
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$RUNC'
          Root = '$DIR/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$DIR/cni/bin', '$CNI_BIN']
      conf_dir = '$DIR/cni/net.d'
TOML

# --- start ------------------------------------------------------------------
log "starting containerd in $DIR"
setsid "$BIN/containerd" --config "$DIR/config.toml" </dev/null >"$DIR/containerd.log" 2>&1 &
PID=$!
echo "$PID" >"$DIR/containerd.pid"

ctr_() { "$BIN/ctr" --address "$SOCK" "$@"; }
for _ in $(seq 1 300); do
	kill -0 "$PID" 2>/dev/null || { tail -20 "$DIR/containerd.log" >&2; die "containerd exited"; }
	if [ -S "$SOCK" ] && ctr_ version >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done
ctr_ version >/dev/null 2>&1 || { tail -20 "$DIR/containerd.log" >&2; die "containerd did not answer on $SOCK"; }

for img in pause counter; do
	ctr_ -n k8s.io images import "$IMAGES/$img.tar" >&2 || die "import of $IMAGES/$img.tar failed"
done
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$SOCK" "$SOCK" >"$DIR/crictl.yaml"
crictl_() { "$BIN/crictl" --config "$DIR/crictl.yaml" "$@"; }
# Wait until the CRI plugin is up and sees the sandbox image.
for _ in $(seq 1 100); do
	if crictl_ inspecti localhost/pause:3.10 >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done
crictl_ inspecti localhost/pause:3.10 >/dev/null ||
	die "the CRI plugin does not see localhost/pause:3.10"

log "containerd $("$BIN/containerd" --version | awk '{print $3}') ready, pid $PID"
echo "$SOCK"
