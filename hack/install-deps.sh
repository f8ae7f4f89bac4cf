#!/usr/bin/env bash
# Installs what ckpt needs on a Debian 12 host: runc, iptables, zstd, curl, a CRIU
# >= 4.2 proven by a real socket dump on this kernel, and (for tests) checkpointctl, crictl
# and a registry (hack/install-registry.sh).
# Idempotent; run as root. It never changes which versions apt picks for the
# rest of the system: Debian sid's CRIU goes into a private prefix.
set -euo pipefail

CRIU_PREFIX=${CRIU_PREFIX:-/opt/ckpt/criu}
CRIU_WRAPPER=${CRIU_WRAPPER:-/usr/local/sbin/criu}
GOBIN=${GOBIN:-/usr/local/bin}
export PATH=/usr/local/go/bin:$PATH
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "install-deps: must run as root" >&2; exit 1; }

need_apt=()
for pair in runc:runc iptables-restore:iptables zstd:zstd tar:tar ip:iproute2 curl:curl nsenter:util-linux dpkg-deb:dpkg; do
	cmd=${pair%%:*} pkg=${pair##*:}
	command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# The real-application tests build their images from Debian packages
# (internal/testutil/debimage) and check them against Debian's keyring.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
# The pause image is one static C thread (examples/pause/pause.c).
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need_apt+=(libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "installing ${need_apt[*]} from the distribution"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# CRIU must be >= 4.2: 4.1.x cannot dump TCP or UDP sockets on kernels >= 6.16
# (SO_PASSCRED/SO_PASSSEC on INET sockets answer EOPNOTSUPP; criu#2705).
criu_new_enough() {
	local v
	v=$("$1" --version 2>/dev/null | awk '/^Version:/ {print $2}')
	[ -n "$v" ] || return 1
	[ "$(printf '%s\n4.2\n' "$v" | sort -V | head -1)" = 4.2 ]
}
criu_ok() { criu_new_enough "$1" && "$1" check >/dev/null 2>&1; }

debian_mirror() {
	local uri
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit} $1 == "deb" && $2 ~ /^\[/ {print $3; exit}' /etc/apt/sources.list 2>/dev/null || true)
	echo "${uri:-http://deb.debian.org/debian}"
}

install_private_criu() {
	log "installing CRIU from Debian sid into $CRIU_PREFIX (its own libc; system apt untouched)"
	local state
	state=$(mktemp -d)
	trap 'rm -rf "$state"' RETURN
	mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/etc/preferences.d"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) sid main" >"$state/sources.list"
	local apt_opts=(-o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=-
		-o Dir::Etc::preferencesparts="$state/etc/preferences.d"
		-o Dir::State::Lists="$state/lists" -o Dir::Cache::archives="$state/archives"
		-o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
	apt-get "${apt_opts[@]}" update -qq
	local pkgs=(criu libcompel1 libc6 libgnutls30t64 libnettle8t64 libhogweed6t64 libunistring5 libp11-kit0
		libtasn1-6 libidn2-0 libgmp10 libnftables1 libnl-3-200 libnet9 libprotobuf-c1 libbsd0 libmd0
		libuuid1 libmnl0 libnftnl11 libjansson4 libxtables12 libedit2 libtinfo6 libffi8)
	(cd "$state/archives" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null)
	rm -rf "$CRIU_PREFIX.new" && mkdir -p "$CRIU_PREFIX.new"
	for deb in "$state"/archives/*.deb; do dpkg-deb -x "$deb" "$CRIU_PREFIX.new"; done
	rm -rf "$CRIU_PREFIX" && mv "$CRIU_PREFIX.new" "$CRIU_PREFIX"
	local L="$CRIU_PREFIX/usr/lib/x86_64-linux-gnu"
	mkdir -p "$(dirname "$CRIU_WRAPPER")"
	cat >"$CRIU_WRAPPER" <<WRAP
#!/bin/sh
exec "$L/ld-linux-x86-64.so.2" --library-path "$L" "$CRIU_PREFIX/usr/sbin/criu" "\$@"
WRAP
	chmod 0755 "$CRIU_WRAPPER"
}

if [ -x "$CRIU_WRAPPER" ] && criu_ok "$CRIU_WRAPPER"; then
	log "criu: $("$CRIU_WRAPPER" --version | head -1) (private, check passes)"
else
	# The distribution's CRIU is preferred when it is new enough and its check passes.
	if ! command -v /usr/sbin/criu >/dev/null 2>&1; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends criu >/dev/null || true
	fi
	if [ -x /usr/sbin/criu ] && criu_ok /usr/sbin/criu; then
		log "criu: distribution's $(/usr/sbin/criu --version | head -1) is new enough and passes its check"
	else
		log "distribution's criu is older than 4.2 or fails 'criu check' on $(uname -r)"
		install_private_criu
		"$CRIU_WRAPPER" check | tail -1
	fi
fi

# `criu check` passing is not enough: dump a process that holds a TCP listener,
# a UDP socket, a unix socket pair and an established TCP connection.
criu_bin=$CRIU_WRAPPER
[ -x "$criu_bin" ] || criu_bin=/usr/sbin/criu
log "proving CRIU with a socket dump"
go run ./hack/criuprobe -criu "$criu_bin"

# Tools the tests use to check compatibility with the field.
if [ "${CKPT_TEST_TOOLS:-1}" = 1 ]; then
	if ! [ -x "$GOBIN/checkpointctl" ]; then
		log "installing checkpointctl v1.6.0"
		GOBIN=$GOBIN go install github.com/checkpoint-restore/checkpointctl@v1.6.0
	fi
	# A registry on loopback for the checkpoint image tests.
	./hack/install-registry.sh
fi
log "dependencies ready"
