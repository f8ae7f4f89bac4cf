# ckpt — see README.md
GO        ?= go
BIN       := bin
IMAGES    := _output/images
export PATH := /usr/local/go/bin:/usr/local/sbin:/usr/local/bin:$(PATH)

.PHONY: all build deps images image kube crio test unit realapps demo bench soak fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ckpt ./cmd/ckpt
	$(GO) build -o $(BIN)/kubectl-checkpoint ./cmd/kubectl-checkpoint

deps:
	./hack/install-deps.sh

# Example workloads as OCI image archives, built locally (there is no registry).
images: build
	./hack/build-images.sh $(IMAGES)

# The node agent as a reproducible OCI image archive (static ckpt, no Docker):
# ctr -n k8s.io images import _output/ckpt-image.tar
image:
	./hack/build-ckpt-image.sh _output/ckpt-image.tar

# The real Kubernetes the tests run (test/e2e/kube): kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl v1.37 and etcd,
# built once per machine into /opt/ckpt/kube (long the first time).
kube:
	./hack/build-kube.sh

# CRI-O v1.34 and pinns for the CRI suite, built once per machine into
# /opt/ckpt/crio (about 13 minutes the first time), outside the test timeout.
crio:
	./hack/build-crio.sh >/dev/null

# The CRI restore tests run again on containerd 2.3.7: 2.1-2.3 restore
# through CRI CreateContainer (2.4 removed it), from archives and from
# checkpoint images.
test: deps build images image kube crio
	$(GO) vet ./...
	CKPT_BIN=$(CURDIR)/$(BIN)/ckpt CKPT_IMAGES=$(CURDIR)/$(IMAGES) $(GO) test -count=1 -timeout 40m ./...
	CONTAINERD_VERSION=v2.3.7 CKPT_CONTAINERD_BIN=/opt/ckpt/containerd-2.3/bin \
	CKPT_BIN=$(CURDIR)/$(BIN)/ckpt CKPT_IMAGES=$(CURDIR)/$(IMAGES) \
		$(GO) test -count=1 -timeout 20m -run 'TestRestoreThroughCRI|TestRestoreFromCheckpointImageThroughCRI' ./test/e2e/cri/

# The real-application suite alone (part of make test): redis, Python, a JVM,
# foreign archives; images from Debian packages, cached in /opt/ckpt/debimage.
realapps: deps build images
	CKPT_BIN=$(CURDIR)/$(BIN)/ckpt CKPT_IMAGES=$(CURDIR)/$(IMAGES) $(GO) test -count=1 -timeout 30m -v -run 'TestRealApp' ./test/e2e/

unit:
	$(GO) test -count=1 -short ./...

demo: deps build images
	./hack/demo.sh

# ckpt side by side with runc/CRIU, containerd (CRI, crictl) and Podman:
# writes bench/results/ and docs/benchmarks.md (about 25 minutes).
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
