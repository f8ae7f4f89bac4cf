#!/usr/bin/env bash
# build-images.sh OUTDIR: build the example images as `docker save` tarballs
#   OUTDIR/counter.tar  localhost/counter:latest  entrypoint /counter
#   OUTDIR/pause.tar    localhost/pause:3.10      entrypoint /pause
#   OUTDIR/busybox.tar  localhost/busybox:latest  /bin/busybox from Debian's busybox-static
#   OUTDIR/busybox-nobody.tar localhost/busybox-nobody:latest  the same, User nobody
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
	if [[ -f examples/$name/$name.c ]]; then
		# One static thread (see examples/pause/pause.c).
		${CC:-cc} -static -Os -s -o "$bin" "examples/$name/$name.c"
	else
		CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$bin" "./examples/$name"
	fi
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

# busybox-static from Debian (apt-get download; cached in OUTDIR/.build).
busybox() { # name ref user
	local name=$1 ref=$2 user=$3 deb
	deb=$(ls "$out"/.build/busybox-static_*.deb 2>/dev/null | head -1 || true)
	if [[ -z $deb ]]; then
		(cd "$out/.build" && apt-get download busybox-static >/dev/null 2>&1) || {
			echo "build-images: apt-get download busybox-static failed" >&2
			return 1
		}
		deb=$(ls "$out"/.build/busybox-static_*.deb | head -1)
	fi
	local bin="$out/.build/busybox" stamp="$out/.build/$name.stamp" tar="$out/$name.tar"
	if [[ ! -x $bin ]]; then
		rm -rf "$out/.build/busybox-x"
		dpkg-deb -x "$deb" "$out/.build/busybox-x"
		cp "$out/.build/busybox-x/bin/busybox" "$bin"
	fi
	local want
	want=$(cat "$bin" "$out/.build/mkimage" | sha256sum | cut -d' ' -f1)
	want="$want $ref $user $SOURCE_DATE_EPOCH"
	if [[ -f $tar && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		echo "$tar: up to date"
		return
	fi
	"$out/.build/mkimage" -o "$tar" -name "$ref" -binary "$bin" -entrypoint /bin/busybox -user "$user"
	echo "$want" >"$stamp"
	echo "$tar: $ref"
}

busybox busybox localhost/busybox:latest ""
busybox busybox-nobody localhost/busybox-nobody:latest nobody
