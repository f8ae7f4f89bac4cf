#!/usr/bin/env bash
# Unpacks Debian 12's docker-registry (distribution 2.8, a static Go binary)
# into CKPT_REGISTRY_PREFIX (default /opt/ckpt/registry) for the tests'
# loopback registry: `apt-get download` + `dpkg-deb -x`, so the system's
# packages are untouched, no service is installed and nothing is started.
# The binary is $CKPT_REGISTRY_PREFIX/usr/bin/docker-registry (the layout
# hack/start-registry.sh uses too).
set -euo pipefail

PREFIX=${CKPT_REGISTRY_PREFIX:-/opt/ckpt/registry}
log() { printf '==> %s\n' "$*"; }

[ -x "$PREFIX/usr/bin/docker-registry" ] && exit 0
log "unpacking Debian's docker-registry into $PREFIX"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root docker-registry) && [ -f "$work"/docker-registry_*.deb ]; }
download || { apt-get update -qq && download; } || { echo "install-registry: apt-get download docker-registry failed" >&2; exit 1; }
rm -rf "$PREFIX.new"
dpkg-deb -x "$work"/docker-registry_*.deb "$PREFIX.new"
"$PREFIX.new/usr/bin/docker-registry" --version >/dev/null
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"
