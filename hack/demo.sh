#!/usr/bin/env bash
# make demo: run a counter pod on the embedded runtime (runc + CRIU), checkpoint
# it through the kubelet Checkpoint API, show the archive, restore it, and
# show that the restored copy continues exactly where the checkpoint was taken.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${CKPT:-$PWD/bin/ckpt}
IMAGES=${IMAGES:-$PWD/_output/images}
PORT=${PORT:-10251}
work=$(mktemp -d /tmp/ckpt-demo.XXXXXX)
root=$work/root
agent_pid=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
	say "cleaning up"
	rm -f "$work/manifests/counter.yaml"
	[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
	"$CKPT" --root-dir "$root" rm --all || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/manifests"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token,demo-admin,1000,\"system:masters\"" >"$work/tokens.csv"
chmod 600 "$work/tokens.csv"

say "importing the example image (no registry needed)"
"$CKPT" --root-dir "$root" image import "$IMAGES/counter.tar"
"$CKPT" --root-dir "$root" image ls

cat >"$work/manifests/counter.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: counter
  namespace: default
spec:
  containers:
  - name: counter
    image: localhost/counter:latest
    env:
    - name: COUNTER_MEM_MIB
      value: "64"
    - name: COUNTER_MARKER
      value: "demo-secret-42"
YAML

say "starting the agent: ckpt serve (HTTPS on 127.0.0.1:$PORT, static pods from $work/manifests)"
"$CKPT" --root-dir "$root" serve --address 127.0.0.1 --port "$PORT" \
	--pod-manifest-path "$work/manifests" --file-check-frequency 1s \
	--token-auth-file "$work/tokens.csv" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	"$CKPT" --root-dir "$root" ps 2>/dev/null | grep -q ' running ' && break
	sleep 0.2
done
"$CKPT" --root-dir "$root" ps
log=$(ls "$root"/ckpt/containers/*/container.log)
sleep 3
echo "the counter's output so far:"; tail -n 3 "$log"

say "checkpointing through the kubelet API: POST /checkpoint/default/counter/counter"
echo "curl --cacert $root/pki/ckpt.crt -H 'Authorization: Bearer ***' -X POST https://127.0.0.1:$PORT/checkpoint/default/counter/counter"
answer=$(curl -sS --cacert "$root/pki/ckpt.crt" -H "Authorization: Bearer $token" \
	-X POST "https://127.0.0.1:$PORT/checkpoint/default/counter/counter")
echo "$answer"
archive=$(echo "$answer" | sed -n 's/.*"items":\["\([^"]*\)".*/\1/p')
[ -n "$archive" ] || { echo "checkpoint failed"; cat "$work/agent.log"; exit 1; }

say "the archive"
ls -l "$archive"
stat -c '%A %n' "$(dirname "$archive")"
tar tvf "$archive" | grep -v ' checkpoint/.*\.img$' | head -20
echo "... and $(tar tf "$archive" | grep -c 'checkpoint/.*\.img$') CRIU image files"
if command -v checkpointctl >/dev/null; then
	say "checkpointctl show (the field's inspection tool) reads it"
	checkpointctl show "$archive"
fi

say "the counter is still counting"
before=$(wc -l <"$log"); sleep 2; after=$(wc -l <"$log")
tail -n 2 "$log"
[ "$after" -gt "$before" ] && echo "($((after - before)) new lines in 2s: still running)"

say "restoring the checkpoint as pod default/counter-restored"
tok=$work/token; echo "$token" >"$tok"
"$CKPT" restore "$(basename "$archive")" --pod default/counter-restored \
	--server "https://127.0.0.1:$PORT" --cacert "$root/pki/ckpt.crt" --token-file "$tok"
"$CKPT" --root-dir "$root" ps
k=$(tar xOf "$archive" container.log | sed -n 's/.* stdout F count //p' | tail -1)
echo "last count in the archive: $k"
first=
for _ in $(seq 100); do
	for f in "$root"/ckpt/containers/*/container.log; do
		[ "$f" != "$log" ] || continue
		first=$(sed -n 's/.* stdout F count //p' "$f" | head -1)
		[ -n "$first" ] && break
	done
	[ -n "$first" ] && break
	sleep 0.2
done
echo "first count of the restored container: $first"
[ "$first" = $((k + 1)) ] && echo "the restored counter resumed exactly where it was checkpointed"

say "done: archive at $archive (removed with the demo directory)"
