#!/usr/bin/env bash
# Builds CRI-O and pinns from the cri-o Go module (cached), for ckpt's CRI tests.
#
#   hack/build-crio.sh          prints the directory holding crio and pinns
#
# Cache: CKPT_CRIO_PREFIX (default /opt/ckpt/crio/$CRIO_VERSION)/bin/{crio,pinns};
# when both exist nothing is built. Needs Debian's libseccomp-dev (cgo), which
# it installs with apt-get when missing. The build runs under nice -n 19.
set -euo pipefail

CRIO_VERSION=${CRIO_VERSION:-v1.34.0}
PREFIX=${CKPT_CRIO_PREFIX:-/opt/ckpt/crio/$CRIO_VERSION}
export PATH=/usr/local/go/bin:$PATH

log() { printf 'build-crio: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if [ -x "$PREFIX/bin/crio" ] && [ -x "$PREFIX/bin/pinns" ]; then
	echo "$PREFIX/bin"
	exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root"

if ! dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'install ok installed'; then
	log "installing libseccomp-dev (apt)"
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp-dev >&2
fi

log "downloading github.com/cri-o/cri-o@$CRIO_VERSION"
MODDIR=$(cd / && go mod download -json "github.com/cri-o/cri-o@$CRIO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
[ -n "$MODDIR" ] && [ -d "$MODDIR" ] || die "go mod download gave no module directory"

mkdir -p "$PREFIX"
SRC=$(mktemp -d "$PREFIX/src.XXXXXX")
trap 'rm -rf "$SRC"' EXIT
cp -r "$MODDIR/." "$SRC/"
chmod -R u+w "$SRC"

log "building crio (nice -n 19; several minutes on two cores)"
start=$(date +%s)
(cd "$SRC" && GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=1 nice -n 19 go build -trimpath \
	-tags "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper seccomp" \
	-o "$SRC/out/crio" ./cmd/crio) >&2
log "building pinns"
nice -n 19 make -C "$SRC/pinns" >&2
mkdir -p "$PREFIX/bin.new"
install -m 0755 "$SRC/out/crio" "$PREFIX/bin.new/crio"
install -m 0755 "$SRC/bin/pinns" "$PREFIX/bin.new/pinns" 2>/dev/null || install -m 0755 "$SRC/pinns/pinns" "$PREFIX/bin.new/pinns" 2>/dev/null || {
	p=$(find "$SRC" -type f -name pinns -perm -u+x | head -1); [ -n "$p" ] || die "pinns not built"; install -m 0755 "$p" "$PREFIX/bin.new/pinns"; }
rm -rf "$PREFIX/bin"
mv "$PREFIX/bin.new" "$PREFIX/bin"
log "built crio and pinns in $(( $(date +%s) - start )) s into $PREFIX/bin"
echo "$PREFIX/bin"
