#!/usr/bin/env bash
# Starts a private image registry (Debian's docker-registry, distribution 2.8)
# on 127.0.0.1:PORT, storing into DIR, for tests that need to pull images.
#
#   hack/start-registry.sh PORT DIR     prints 127.0.0.1:PORT when it answers
#
# DIR gets config.yml, data/, registry.log and registry.pid. Stop it with
# hack/stop-registry.sh DIR. Plain HTTP, loopback only, no auth: clients must
# treat it as insecure. Push images with `go run ./hack/pushimage`.
#
# Installs on first use with hack/install-registry.sh (into
# CKPT_REGISTRY_PREFIX, default /opt/ckpt/registry; system packages untouched).
set -euo pipefail

PREFIX=${CKPT_REGISTRY_PREFIX:-/opt/ckpt/registry}
log() { printf 'start-registry: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PORT=${1:-}
DIR=${2:-}
[[ $PORT =~ ^[0-9]+$ ]] && [ -n "$DIR" ] || die "usage: $0 PORT DIR"
REG=$PREFIX/usr/bin/docker-registry

CKPT_REGISTRY_PREFIX=$PREFIX "$(dirname "$0")/install-registry.sh" >&2

mkdir -p "$DIR/data"
DIR=$(cd "$DIR" && pwd)
chmod 0700 "$DIR"
if [ -f "$DIR/registry.pid" ] && kill -0 "$(cat "$DIR/registry.pid")" 2>/dev/null; then
	die "a registry already runs for $DIR (pid $(cat "$DIR/registry.pid"))"
fi
cat >"$DIR/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
YML
setsid "$REG" serve "$DIR/config.yml" </dev/null >"$DIR/registry.log" 2>&1 &
PID=$!
echo "$PID" >"$DIR/registry.pid"
for _ in $(seq 1 100); do
	kill -0 "$PID" 2>/dev/null || { tail -20 "$DIR/registry.log" >&2; die "docker-registry exited"; }
	if { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null; then
		printf 'GET /v2/ HTTP/1.0\r\n\r\n' >&3
		if head -1 <&3 | grep -q ' 200 '; then
			exec 3>&-
			log "registry ready on 127.0.0.1:$PORT, pid $PID"
			echo "127.0.0.1:$PORT"
			exit 0
		fi
		exec 3>&-
	fi
	sleep 0.1
done
tail -20 "$DIR/registry.log" >&2
die "registry did not answer on 127.0.0.1:$PORT"
