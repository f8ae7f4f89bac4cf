#!/usr/bin/env bash
# build-ckpt-image.sh OUT: the ckpt node agent as a reproducible OCI image
# archive, built without Docker (go-containerregistry, hack/mkimage):
#
#   OUT (default _output/ckpt-image.tar)   image localhost/ckpt:latest
#
# The image holds a static ckpt (CGO_ENABLED=0) at /ckpt, /tmp, /etc/passwd
# and /etc/group, nothing else: in CRI mode ckpt talks to the runtime over
# its socket and needs no runc, CRIU or shell. Load it on a node with
#   ctr -n k8s.io images import OUT
# The same tree gives the same bytes: file times are zero and the image's
# time is the last commit's (SOURCE_DATE_EPOCH).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-_output/ckpt-image.tar}
ref=${CKPT_IMAGE:-localhost/ckpt:latest}
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
mkdir -p "$(dirname "$out")/.build"
build=$(cd "$(dirname "$out")/.build" && pwd)
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
"$GO" build -o "$build/mkimage" ./hack/mkimage
CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$build/ckpt-static" ./cmd/ckpt
"$build/mkimage" -format oci-archive -o "$out" -name "$ref" -binary "$build/ckpt-static" -entrypoint /ckpt
echo "$out: $ref ($(sha256sum "$out" | cut -c1-16))"
