#!/usr/bin/env bash
# Unpacks Debian 12's docker-registry (distribution 2.8, a static Go binary)
# into /opt/ckpt/registry/<version> for the tests' loopback registry. The
# system is untouched: no service is installed, nothing is started.
# Prints nothing but progress; the binary is $REGISTRY_PREFIX/<version>/usr/bin/docker-registry
# and /opt/ckpt/registry/current links to the version.
set -euo pipefail

REGISTRY_PREFIX=${REGISTRY_PREFIX:-/opt/ckpt/registry}
log() { printf '==> %s\n' "$*"; }

if [ -x "$REGISTRY_PREFIX/current/usr/bin/docker-registry" ]; then
	exit 0
fi
version=$(apt-cache policy docker-registry 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
	apt-get update -qq
	version=$(apt-cache policy docker-registry | awk '/Candidate:/ {print $2}')
fi
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "install-registry: no docker-registry package" >&2; exit 1; }
log "unpacking docker-registry $version into $REGISTRY_PREFIX/$version"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "docker-registry=$version")
mkdir -p "$REGISTRY_PREFIX"
rm -rf "$REGISTRY_PREFIX/$version.tmp"
dpkg-deb -x "$work"/docker-registry_*.deb "$REGISTRY_PREFIX/$version.tmp"
"$REGISTRY_PREFIX/$version.tmp/usr/bin/docker-registry" --version >/dev/null
rm -rf "$REGISTRY_PREFIX/$version"
mv "$REGISTRY_PREFIX/$version.tmp" "$REGISTRY_PREFIX/$version"
ln -sfn "$version" "$REGISTRY_PREFIX/current"
