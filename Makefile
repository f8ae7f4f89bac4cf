# ckpt — see README.md
GO        ?= go
BIN       := bin
IMAGES    := _output/images
export PATH := /usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$(PATH)

.PHONY: all build deps images test unit demo bench soak fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ckpt ./cmd/ckpt

deps:
	./hack/install-deps.sh

# Example workloads as OCI image archives, built locally (there is no registry).
images: build
	./hack/build-images.sh $(IMAGES)

# The CRI restore tests run again on containerd 2.3.7: 2.1-2.3 restore
# through CRI CreateContainer (2.4 removed it), from archives and from
# checkpoint images.
test: deps build images
	$(GO) vet ./...
	CKPT_BIN=$(CURDIR)/$(BIN)/ckpt CKPT_IMAGES=$(CURDIR)/$(IMAGES) $(GO) test -count=1 -timeout 40m ./...
	CONTAINERD_VERSION=v2.3.7 CKPT_CONTAINERD_BIN=/opt/ckpt/containerd-2.3/bin \
	CKPT_BIN=$(CURDIR)/$(BIN)/ckpt CKPT_IMAGES=$(CURDIR)/$(IMAGES) \
		$(GO) test -count=1 -timeout 20m -run 'TestRestoreThroughCRI|TestRestoreFromCheckpointImageThroughCRI' ./test/e2e/cri/

unit:
	$(GO) test -count=1 -short ./...

demo: deps build images
	./hack/demo.sh

# ckpt side by side with runc/CRIU, containerd (CRI, crictl) and Podman:
# writes bench/results/ and docs/benchmarks.md (about 15 minutes).
bench: deps build images
	./hack/install-bench-deps.sh
	$(GO) run ./bench/cmd/ckptbench -ckpt $(BIN)/ckpt -images $(IMAGES)

fuzz:
	./hack/fuzz.sh

# Longer reliability runs: 60 s of load, 50 agent kills.
soak: deps build images
	./hack/soak.sh

clean:
	rm -rf $(BIN) _output
