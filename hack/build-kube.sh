#!/usr/bin/env bash
# Builds the real Kubernetes binaries ckpt's Kubernetes tests run against,
# from their Go modules through the module proxy, cached per version:
#
#   hack/build-kube.sh            builds what is missing, prints the bin dir
#
#   /opt/ckpt/kube/$KUBE_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl}
#   /opt/ckpt/kube/etcd-$ETCD_VERSION/bin/etcd
#
# `go install` refuses these modules for their replace directives, so each
# module is downloaded (go mod download -json), copied, its go.work and
# local replaces dropped, the published k8s.io/* modules required in place
# of the v0.0.0 placeholders, and built with -mod=mod. A binary that exists
# is never rebuilt. Builds run at nice 19, one at a time (a few minutes each
# on two cores).
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KUBE_ROOT=${CKPT_KUBE_ROOT:-/opt/ckpt/kube}
KBIN=$KUBE_ROOT/$KUBE_VERSION/bin
EBIN=$KUBE_ROOT/etcd-$ETCD_VERSION/bin
export PATH=/usr/local/go/bin:$PATH
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=${CGO_ENABLED:-1}

log() { printf 'build-kube: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The published staging modules are v0.X.Y for Kubernetes v1.X.Y.
STAGING_VERSION=v0.${KUBE_VERSION#v1.}

# prepare MODULE VERSION DEST: a writable copy of the module's source.
prepare() {
	local mod=$1 ver=$2 dest=$3 dir
	[ -f "$dest/.prepared" ] && return 0
	rm -rf "$dest"
	dir=$(cd / && go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $mod@$ver gave no directory"
	mkdir -p "$(dirname "$dest")"
	cp -r "$dir" "$dest"
	chmod -R u+w "$dest"
	rm -f "$dest"/go.work "$dest"/go.work.sum
}

build_kube() {
	local need=() b src=$KUBE_ROOT/src/kubernetes-$KUBE_VERSION
	for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
		[ -x "$KBIN/$b" ] || need+=("$b")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	if ! [ -f "$src/.prepared" ]; then
		log "preparing k8s.io/kubernetes@$KUBE_VERSION in $src"
		prepare k8s.io/kubernetes "$KUBE_VERSION" "$src"
		(
			cd "$src"
			local edits=() m
			# Replaces into ./staging become requirements on the published modules.
			for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' go.mod); do
				edits+=("-dropreplace=$m" "-require=$m@$STAGING_VERSION")
			done
			[ ${#edits[@]} -gt 0 ] || die "no ./staging replaces found in $src/go.mod"
			go mod edit "${edits[@]}"
		)
		touch "$src/.prepared"
	fi
	mkdir -p "$KBIN"
	for b in "${need[@]}"; do
		log "building $b $KUBE_VERSION (nice 19; several minutes)"
		(cd "$src" && nice -n 19 go build -trimpath -ldflags "-s -w \
			-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
			-X k8s.io/component-base/version.gitMajor=1 \
			-X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
			-o "$KBIN/$b.tmp" "./cmd/$b") >&2 || die "build of $b failed"
		mv "$KBIN/$b.tmp" "$KBIN/$b"
	done
}

build_etcd() {
	[ -x "$EBIN/etcd" ] && return 0
	local src=$KUBE_ROOT/src/etcd-server-$ETCD_VERSION
	if ! [ -f "$src/.prepared" ]; then
		log "preparing go.etcd.io/etcd/server/v3@$ETCD_VERSION in $src"
		prepare go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$src"
		(
			cd "$src"
			local edits=() m
			# Local (../) replaces and the FORBIDDEN_DEPENDENCY guards go.
			for m in $(awk '$1 == "replace" {$1 = ""; $0 = $0} $2 == "=>" && $3 ~ /^\.\.?\// {print $1}' go.mod); do
				edits+=("-dropreplace=$m")
			done
			[ ${#edits[@]} -eq 0 ] || go mod edit "${edits[@]}"
		)
		touch "$src/.prepared"
	fi
	mkdir -p "$EBIN"
	log "building etcd $ETCD_VERSION (nice 19)"
	# The server module's main package is the etcd binary.
	(cd "$src" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$EBIN/etcd.tmp" .) >&2 || die "build of etcd failed"
	mv "$EBIN/etcd.tmp" "$EBIN/etcd"
}

case "${1:-all}" in
all) build_etcd; build_kube ;;
etcd) build_etcd ;;
kube) build_kube ;;
*) die "usage: $0 [all|etcd|kube]" ;;
esac
echo "$KBIN"
