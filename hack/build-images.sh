#!/usr/bin/env bash
# build-images.sh OUTDIR: build the example images as `docker save` tarballs
#   OUTDIR/counter.tar  localhost/counter:latest  entrypoint /counter
#   OUTDIR/pause.tar    localhost/pause:3.10      entrypoint /pause
# Both `ckpt image import` and `ctr -n k8s.io images import` accept them.
# Outputs are reproducible, and rewritten only when their inputs change.
set -euo pipefail

out=${1:?usage: build-images.sh OUTDIR}
cd "$(dirname "$0")/.."
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

mkdir -p "$out/.build"
# Image creation time: the last commit that touched the inputs, so that the
# same tree gives the same image IDs.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct -- examples hack/mkimage 2>/dev/null || true)
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

# The generator itself, built once (go's cache makes this quick).
"$GO" build -o "$out/.build/mkimage" ./hack/mkimage

build() { # name ref entrypoint
	local name=$1 ref=$2 entry=$3
	local bin="$out/.build/$name" stamp="$out/.build/$name.stamp" tar="$out/$name.tar"
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$bin" "./examples/$name"
	local want
	want=$(cat "$bin" "$out/.build/mkimage" | sha256sum | cut -d' ' -f1)
	want="$want $ref $entry $SOURCE_DATE_EPOCH"
	if [[ -f $tar && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		echo "$tar: up to date"
		return
	fi
	"$out/.build/mkimage" -o "$tar" -name "$ref" -binary "$bin" -entrypoint "$entry"
	echo "$want" >"$stamp"
	echo "$tar: $ref"
}

build counter localhost/counter:latest /counter
build pause localhost/pause:3.10 /pause
