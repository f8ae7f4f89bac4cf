#!/usr/bin/env bash
# Starts a private CRI-O 1.34 (runc, conmon, overlay, CRIU support) for ckpt's
# CRI tests, and prints its socket path.
#
#   hack/start-crio.sh [DIR]      DIR defaults to a new /tmp/ckpt-crio.XXXXXX
#
# Everything lives in DIR: config, storage, run state, runc root, CNI config,
# logs, crio.pid, and a private image registry (DIR/registry). Stop it with
# hack/stop-crio.sh DIR.
#
# Installs on first use (idempotent):
#   crio, pinns     built from the cri-o Go module by hack/build-crio.sh,
#                   cached in /opt/ckpt/crio/$CRIO_VERSION/bin
#   crictl          go install (cri-tools v1.37.0), same directory
#   conmon, libseccomp-dev, containernetworking-plugins   Debian (apt)
#   docker-registry Debian's, unpacked by hack/start-registry.sh
#
# Workarounds this machine needs (see docs/kubernetes.md, "CRI-O"):
#   - No CAP_SYS_RESOURCE: CRI-O gives the pause container oomScoreAdj -998
#     and has no restrict_oom_score_adj; runc then fails on
#     /proc/self/oom_score_adj. CRI-O runs DIR/bin/runc-wrapper, which sets
#     negative oomScoreAdj in the bundle's config.json to 0 and execs runc.
#   - Images: CRI-O cannot import image tarballs. CKPT_IMAGES/{pause,counter}.tar
#     are pushed (hack/pushimage, go-containerregistry) to the private registry
#     on 127.0.0.1, which registries.conf maps to the "localhost" prefix, and
#     pulled through CRI. --registries-conf is a hidden flag of crio;
#     CONTAINERS_REGISTRIES_CONF is ignored.
#   - Signature policy: CRI-O's restore path fails with "user specified image
#     not specified, cannot verify image signature" when signature_policy is
#     set, so policy.json (insecureAcceptAnything) is found through HOME=DIR/home.
#   - CRIU >= 4.2 is first on PATH, for crio, conmon (monitor_env) and runc.
#   - CRI-O does not create <pod log dir>/<container>/ (the kubelet does):
#     whoever creates containers must.
#
# Networking: the loopback-only CNI of hack/start-containerd.sh: pods get a
# network namespace with only "lo"; nothing is created on the host.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CRIO_VERSION=${CRIO_VERSION:-v1.34.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
IMAGES=${CKPT_IMAGES:-$REPO/_output/images}
CNI_BIN=${CNI_BIN:-/usr/lib/cni}
CRIU_DIR=${CKPT_CRIU_DIR:-/usr/local/sbin}
export PATH=/usr/local/go/bin:$PATH

log() { printf 'start-crio: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
RUNC=$(command -v runc) || die "runc not found (run hack/install-deps.sh)"
"$CRIU_DIR/criu" --version >/dev/null 2>&1 || die "no criu in $CRIU_DIR (run hack/install-deps.sh)"

# --- install (idempotent) ---------------------------------------------------
BIN=$(CRIO_VERSION=$CRIO_VERSION "$REPO/hack/build-crio.sh")
modver() { go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m {print $3}'; }
if [ "$(modver "$BIN/crictl" sigs.k8s.io/cri-tools)" != "$CRICTL_VERSION" ]; then
	log "installing crictl $CRICTL_VERSION into $BIN"
	(cd / && GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") >&2
fi
apt_pkgs=()
[ -x /usr/bin/conmon ] || apt_pkgs+=(conmon)
[ -x "$CNI_BIN/loopback" ] || apt_pkgs+=(containernetworking-plugins)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
	log "installing ${apt_pkgs[*]} (apt)"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >&2
fi
[ -x /usr/bin/conmon ] || die "no /usr/bin/conmon"
[ -x "$CNI_BIN/loopback" ] || die "no loopback CNI plugin in $CNI_BIN"
for img in pause counter; do
	[ -f "$IMAGES/$img.tar" ] || die "$IMAGES/$img.tar missing: run ./hack/build-images.sh _output/images (or set CKPT_IMAGES)"
done

# --- private directory and config -------------------------------------------
DIR=${1:-}
if [ -z "$DIR" ]; then
	DIR=$(mktemp -d /tmp/ckpt-crio.XXXXXX)
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
SOCK=$DIR/crio.sock
[ ${#SOCK} -le 100 ] || die "directory path too long for a unix socket: $DIR"
if [ -f "$DIR/crio.pid" ] && kill -0 "$(cat "$DIR/crio.pid")" 2>/dev/null; then
	die "a crio already runs for $DIR (pid $(cat "$DIR/crio.pid"))"
fi
mkdir -p "$DIR"/{bin,cni/net.d,cni/bin,pods-logs,state,ns,runc,home/.config/containers} \
	"$DIR"/etc/{crio.conf.d,registries.conf.d,policies,keys}
# Marks DIR as ours for stop-crio.sh, before anything runs.
: >"$DIR/crio.conf.marker"

# The private registry, on a free loopback port.
REGDIR=$DIR/registry
for _ in $(seq 1 20); do
	PORT=$((20000 + RANDOM % 40000))
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && continue
	if REG=$("$REPO/hack/start-registry.sh" "$PORT" "$REGDIR"); then break; fi
	REG=
	[ -f "$REGDIR/config.yml" ] && "$REPO/hack/stop-registry.sh" "$REGDIR" 2>/dev/null
done
[ -n "${REG:-}" ] || die "could not start a registry on a free loopback port"
log "pushing images to $REG"
(cd "$REPO" && go run ./hack/pushimage -registry "$REG" "$IMAGES/pause.tar" "$IMAGES/counter.tar") >&2 ||
	die "push to $REG failed"

echo "$REG" >"$DIR/registry.addr"
cp "$BIN/pinns" "$DIR/bin/pinns"
cat >"$DIR/bin/runc-wrapper" <<WRAP
#!/bin/sh
# runc for CRI-O on a machine without CAP_SYS_RESOURCE: a negative
# oomScoreAdj in the bundle's config.json becomes 0 (see hack/start-crio.sh).
bundle=
prev=
for a in "\$@"; do
	case "\$prev" in --bundle|-b) bundle=\$a ;; esac
	case "\$a" in --bundle=*) bundle=\${a#--bundle=} ;; esac
	prev=\$a
done
case " \$* " in
*" create "*|*" run "*|*" restore "*)
	if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ] && grep -q '"oomScoreAdj": *-' "\$bundle/config.json"; then
		sed -i -E 's/"oomScoreAdj": *-[0-9]+/"oomScoreAdj":0/' "\$bundle/config.json"
	fi
	;;
esac
exec $RUNC "\$@"
WRAP
chmod 0755 "$DIR/bin/runc-wrapper"

cat >"$DIR/cni/net.d/10-ckpt-loopback.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "ckpt-loopback",
  "plugins": [{"type": "ckpt-loopback-ip"}]
}
CNI
# Same plugin as hack/start-containerd.sh: ADD reports 127.0.0.1 and creates nothing.
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

echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$DIR/home/.config/containers/policy.json"
cat >"$DIR/etc/registries.conf" <<REGS
unqualified-search-registries = []
[[registry]]
prefix = "localhost"
location = "$REG"
insecure = true
REGS


CRIO_PATH=$DIR/bin:$CRIU_DIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cat >"$DIR/etc/crio.conf" <<TOML
# Written by hack/start-crio.sh for ckpt's tests.
[crio]
root = "$DIR/root"
runroot = "$DIR/runroot"
storage_driver = "overlay"
log_dir = "$DIR/pods-logs"
version_file = "$DIR/state/version"
version_file_persist = "$DIR/state/version-persist"
clean_shutdown_file = "$DIR/state/clean.shutdown"
[crio.api]
listen = "$SOCK"
stream_address = "127.0.0.1"
stream_port = "0"
[crio.runtime]
cgroup_manager = "cgroupfs"
default_runtime = "runc"
enable_criu_support = true
pinns_path = "$DIR/bin/pinns"
namespaces_dir = "$DIR/ns"
container_exits_dir = "$DIR/state/exits"
container_attach_socket_dir = "$DIR/state/attach"
hooks_dir = []
cdi_spec_dirs = []
decryption_keys_path = "$DIR/etc/keys/"
irqbalance_config_file = "$DIR/etc/irqbalance"
irqbalance_config_restore_file = "disable"
[crio.runtime.runtimes.runc]
runtime_path = "$DIR/bin/runc-wrapper"
runtime_type = "oci"
runtime_root = "$DIR/runc"
monitor_path = "/usr/bin/conmon"
monitor_cgroup = "pod"
monitor_env = ["PATH=$CRIO_PATH"]
[crio.image]
pause_image = "localhost/pause:3.10"
pause_command = "/pause"
signature_policy_dir = "$DIR/etc/policies"
insecure_registries = ["$REG"]
[crio.network]
network_dir = "$DIR/cni/net.d/"
plugin_dirs = ["$DIR/cni/bin", "$CNI_BIN"]
[crio.metrics]
enable_metrics = false
[crio.nri]
enable_nri = false
TOML

# --- start ------------------------------------------------------------------
# DIR/run-crio starts crio in the background and waits until it is ready;
# hack/restart-crio.sh runs it again.
cat >"$DIR/run-crio" <<RUN
#!/bin/sh
# Written by hack/start-crio.sh: starts this crio and waits for it.
HOME=$DIR/home PATH=$CRIO_PATH setsid $BIN/crio --config $DIR/etc/crio.conf \\
	--config-dir $DIR/etc/crio.conf.d \\
	--registries-conf $DIR/etc/registries.conf --registries-conf-dir $DIR/etc/registries.conf.d \\
	</dev/null >>$DIR/crio.log 2>&1 &
PID=\$!
echo \$PID >$DIR/crio.pid
i=0
while [ \$i -lt 600 ]; do
	kill -0 \$PID 2>/dev/null || { tail -20 $DIR/crio.log >&2; echo "crio exited" >&2; exit 1; }
	if [ -S $SOCK ] && $BIN/crictl --config $DIR/crictl.yaml info 2>/dev/null |
		jq -e '.status.conditions | map(select(.type == "NetworkReady" or .type == "RuntimeReady")) | length == 2 and all(.status)' >/dev/null 2>&1; then
		exit 0
	fi
	sleep 0.1
	i=\$((i + 1))
done
tail -20 $DIR/crio.log >&2
echo "crio is not RuntimeReady and NetworkReady on $SOCK" >&2
exit 1
RUN
chmod 0755 "$DIR/run-crio"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$SOCK" "$SOCK" >"$DIR/crictl.yaml"
crictl_() { "$BIN/crictl" --config "$DIR/crictl.yaml" "$@"; }

log "starting crio in $DIR"
"$DIR/run-crio" || die "crio did not start"
PID=$(cat "$DIR/crio.pid")
for img in localhost/pause:3.10 localhost/counter:latest; do
	crictl_ pull "$img" >&2 || die "crictl pull $img failed"
done
log "crio $("$BIN/crio" --version 2>/dev/null | awk 'NR == 1 {print $3}') ready, pid $PID"
echo "$SOCK"
