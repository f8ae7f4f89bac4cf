#!/usr/bin/env bash
# Starts a one-node Kubernetes on loopback for ckpt's tests, and prints the
# path of its environment file.
#
#   hack/start-kube.sh [DIR]       DIR defaults to a new /tmp/ckpt-kube.XXXXXX
#
# The cluster lives in a network namespace of its own (DIR/netns, holding
# only lo, with 127.0.0.1 and 192.0.2.1 from TEST-NET-1): the API server
# proxies to a node only at a global unicast address, and the kubelet
# refuses a loopback node IP, so the node is 192.0.2.1 there, and the API
# server 127.0.0.1:6443 there. Nothing is added to the host's network. Run
# clients with `nsenter --net=DIR/netns CMD`.
#
# Runs, with everything inside DIR:
#   etcd, kube-apiserver (throwaway PKI, Node+RBAC authorization,
#   --endpoint-reconciler-type=none), kube-controller-manager (DaemonSet,
#   ServiceAccount and root-CA controllers), kube-scheduler, and a kubelet
#   registered as node "ckpt-node" on a private containerd started by
#   hack/start-containerd.sh DIR/containerd.
#
# DIR/kube.env (the printed path) holds, as shell assignments:
#   KUBECONFIG (cluster-admin), KUBECTL, CKPT_KUBE_DIR, CKPT_KUBE_NETNS,
#   CKPT_KUBE_NODE, CKPT_KUBE_NODE_IP, CKPT_KUBE_APISERVER,
#   CKPT_KUBE_KUBELET_PORT, CKPT_KUBE_CA, CKPT_KUBE_CONTAINERD_SOCK,
#   CKPT_KUBE_CONTAINERD_DIR.
# Every process's PID is in DIR/pids/NAME.pid; hack/stop-kube.sh DIR stops
# exactly those, then containerd, and removes DIR.
#
# The binaries are built once per machine by hack/build-kube.sh and cached
# under /opt/ckpt/kube/<version>.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
log() { printf 'start-kube: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
for t in openssl:openssl curl:curl ip:iproute2 nsenter:util-linux; do
	if ! command -v "${t%%:*}" >/dev/null; then
		log "installing ${t#*:}"
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${t#*:}" >&2
	fi
done

KBIN=$("$REPO/hack/build-kube.sh" kube)
EBIN=${CKPT_KUBE_ROOT:-/opt/ckpt/kube}/etcd-${ETCD_VERSION:-v3.6.16}/bin
"$REPO/hack/build-kube.sh" etcd >/dev/null

DIR=${1:-}
[ -n "$DIR" ] || DIR=$(mktemp -d /tmp/ckpt-kube.XXXXXX)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
[ -e "$DIR/kube.env" ] && die "$DIR already holds a cluster (kube.env); stop it with hack/stop-kube.sh $DIR"
mkdir -p "$DIR/pki" "$DIR/pids" "$DIR/logs" "$DIR/etcd" "$DIR/kubelet"

# A failure part-way stops what was started.
started=0
cleanup() { [ "$started" = 1 ] || { log "start failed; stopping what started"; "$REPO/hack/stop-kube.sh" "$DIR" >&2 || true; }; }
trap cleanup EXIT

# --- the cluster's network namespace -----------------------------------------
NETNS=$DIR/netns
NODE_IP=192.0.2.1
touch "$NETNS"
unshare --net="$NETNS" true || die "cannot create a network namespace at $NETNS"
N() { nsenter --net="$NETNS" "$@"; }
# The node's address sits on the namespace's lo (no dummy module needed):
# reachable only inside, yet a global unicast address to the API server.
N ip link set lo up
N ip addr add "$NODE_IP/32" dev lo
# The namespace is private: the usual ports are free.
ETCD_PORT=2379
ETCD_PEER_PORT=2380
API_PORT=6443
KUBELET_PORT=10250
NODE=${CKPT_KUBE_NODE:-ckpt-node}
APISERVER=https://127.0.0.1:$API_PORT

# --- throwaway PKI ------------------------------------------------------------
P=$DIR/pki
ossl() { openssl "$@" 2>>"$DIR/logs/openssl.log"; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ckpt-test-ca" \
	-keyout "$P/ca.key" -out "$P/ca.crt"
# cert NAME SUBJECT [SAN]: a key and a CA-signed certificate.
cert() {
	local name=$1 subj=$2 san=${3:-} ext=$P/$1.ext
	ossl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$P/$name.key" -out "$P/$name.csr"
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"; else echo "extendedKeyUsage=clientAuth"; fi
	} >"$ext"
	ossl x509 -req -in "$P/$name.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 2 \
		-extfile "$ext" -out "$P/$name.crt"
	rm -f "$P/$name.csr" "$ext"
}
cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1"
cert admin "/O=system:masters/CN=ckpt-test-admin"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kubelet "/O=system:nodes/CN=system:node:$NODE"
cert kubelet-serving "/CN=$NODE" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE"
ossl genrsa -out "$P/sa.key" 2048
ossl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"
chmod 0600 "$P"/*.key

# kubeconfig NAME: DIR/NAME.kubeconfig with pki/NAME.{crt,key}.
kubeconfig() {
	cat >"$DIR/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ckpt-test
  cluster: {server: "$APISERVER", certificate-authority: "$P/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$P/$1.crt", client-key: "$P/$1.key"}
contexts:
- name: $1
  context: {cluster: ckpt-test, user: $1}
current-context: $1
KC
	chmod 0600 "$DIR/$1.kubeconfig"
}
for k in admin controller-manager scheduler kubelet; do kubeconfig "$k"; done

# run NAME CMD...: start a process in its own session, log and PID in DIR.
run() {
	local name=$1
	shift
	setsid nsenter --net="$NETNS" "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
	echo $! >"$DIR/pids/$name.pid"
}
alive() { kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }
# wait_for NAME SECONDS CMD...: until CMD succeeds, while NAME lives.
wait_for() {
	local name=$1 secs=$2 i
	shift 2
	for i in $(seq 1 $((secs * 5))); do
		alive "$name" || { tail -30 "$DIR/logs/$name.log" >&2; die "$name exited"; }
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	tail -30 "$DIR/logs/$name.log" >&2
	die "$name not ready after ${secs}s"
}

# --- containerd ---------------------------------------------------------------
log "starting containerd"
SOCK=$(N "$REPO/hack/start-containerd.sh" "$DIR/containerd")

# --- etcd -----------------------------------------------------------------------
log "starting etcd on 127.0.0.1:$ETCD_PORT"
run etcd "$EBIN/etcd" --name default --data-dir "$DIR/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
	--quota-backend-bytes 1073741824
etcd_ok() { N curl -sf "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
wait_for etcd 60 etcd_ok

# --- kube-apiserver ---------------------------------------------------------------
log "starting kube-apiserver on $APISERVER"
run kube-apiserver "$KBIN/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
	--tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
	--client-ca-file "$P/ca.crt" \
	--service-account-issuer https://kubernetes.default.svc \
	--service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
	--service-cluster-ip-range 10.96.0.0/16 \
	--authorization-mode Node,RBAC \
	--endpoint-reconciler-type none \
	--kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority "$P/ca.crt" \
	--kubelet-preferred-address-types InternalIP \
	--allow-privileged=true --profiling=false
KUBECTL=$KBIN/kubectl
k() { N "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
wait_for kube-apiserver 120 k get --raw /readyz

# --- controller manager and scheduler ---------------------------------------------
log "starting kube-controller-manager and kube-scheduler"
run kube-controller-manager "$KBIN/kube-controller-manager" \
	--kubeconfig "$DIR/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
	--service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
	--use-service-account-credentials=true \
	--controllers '*,-node-ipam-controller'
run kube-scheduler "$KBIN/kube-scheduler" \
	--kubeconfig "$DIR/scheduler.kubeconfig" \
	--authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 0 --leader-elect=false

# --- kubelet ------------------------------------------------------------------------
log "starting the kubelet as node $NODE on port $KUBELET_PORT"
cat >"$DIR/kubelet.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
evictionHard: {memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%", imagefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: $DIR/kubelet/pod-logs
serializeImagePulls: false
featureGates: {ContainerCheckpoint: true}
KCFG
run kubelet "$KBIN/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
	--root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
	--hostname-override "$NODE" --node-ip "$NODE_IP" -v 2
node_ready() { k get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
wait_for kubelet 180 node_ready
# The ServiceAccount controller makes "default" in each namespace; pods
# in "default" wait for it.
wait_for kube-controller-manager 60 k get serviceaccount default -n default

cat >"$DIR/kube.env" <<ENV
KUBECONFIG=$DIR/admin.kubeconfig
KUBECTL=$KUBECTL
CKPT_KUBE_DIR=$DIR
CKPT_KUBE_NETNS=$NETNS
CKPT_KUBE_NODE=$NODE
CKPT_KUBE_NODE_IP=$NODE_IP
CKPT_KUBE_APISERVER=$APISERVER
CKPT_KUBE_KUBELET_PORT=$KUBELET_PORT
CKPT_KUBE_CA=$P/ca.crt
CKPT_KUBE_CONTAINERD_SOCK=$SOCK
CKPT_KUBE_CONTAINERD_DIR=$DIR/containerd
ENV
started=1
log "cluster ready: node $NODE ($NODE_IP), API server $APISERVER, in network namespace $NETNS"
echo "$DIR/kube.env"
