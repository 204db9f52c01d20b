# ociseek Makefile. Every target works on a fresh machine: tools are built from
# pinned modules under tools/ (the module proxy here refuses some version
# listings, so nothing uses @latest).

GO        ?= go
BIN       ?= $(CURDIR)/bin
# CGO_ENABLED=0: the default build is pure Go, including the gzip checkpointer.
export CGO_ENABLED := 0
# Tests find the registry and containerd binaries here (see internal/testenv).
export OCISEEK_TOOLS_BIN := $(BIN)/tools

# Packages whose tests need root and /dev/fuse; also run with GOMAXPROCS=1,
# where FUSE deadlocks show (as go-fuse's own CI does).
FUSE_PKGS ?= ./fs/...

.PHONY: all build test unit-test fuse-test bench fuzz lint tools demo clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# tools: the third-party programs the tests start (registries now; containerd
# and clients for integration). Each lives in its own module so their
# dependency graphs never meet ours.
tools:
	@mkdir -p $(OCISEEK_TOOLS_BIN)
	cd tools/registry && $(GO) build -o $(OCISEEK_TOOLS_BIN)/registry github.com/distribution/distribution/v3/cmd/registry
	cd tools/olareg && $(GO) build -o $(OCISEEK_TOOLS_BIN)/olareg github.com/olareg/olareg/cmd/olareg
	# no_btrfs: Debian has no btrfs headers and we never use that snapshotter.
	cd tools/containerd && $(GO) build -tags no_btrfs -o $(OCISEEK_TOOLS_BIN)/ \
	  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
	  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
	cd tools/nerdctl && $(GO) build -o $(OCISEEK_TOOLS_BIN)/ github.com/containerd/nerdctl/cmd/nerdctl
	# cri-tools v1.34.0 depends on cri-api/cri-client release candidates the
	# checksum database does not list; go.sum in tools/crictl pins them.
	cd tools/crictl && GONOSUMDB=sigs.k8s.io/cri-tools,k8s.io/cri-api,k8s.io/cri-client \
	  $(GO) build -o $(OCISEEK_TOOLS_BIN)/ sigs.k8s.io/cri-tools/cmd/crictl

# test: unit and integration tests. -timeout turns a hang into a goroutine dump.
test: tools build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	GOMAXPROCS=1 $(GO) test -count=1 -timeout 15m $(FUSE_PKGS)

# bench: benchmarks print ratios against baselines measured in the same run.
bench: tools
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

# fuzz: each fuzz target for FUZZTIME; crashers land in testdata/fuzz and
# become regression tests run by `make test`.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# demo: the main job end to end on built-in defaults (root; installs what it
# needs): registry, containerd, the snapshotter, a lazily started container,
# then the same image with a full pull, and the comparison line at the end.
demo:
	sh scripts/demo.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
