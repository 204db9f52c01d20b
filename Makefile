# ociseek Makefile. Every target works on a fresh machine: tools are built from
# pinned modules under tools/ (the module proxy here refuses some version
# listings, so nothing uses @latest).

GO        ?= go
BIN       ?= $(CURDIR)/bin
# CGO_ENABLED=0: the default build is pure Go, including the gzip checkpointer.
export CGO_ENABLED := 0
# Tests find the registry and containerd binaries here, and build a missing one
# here on first use (see internal/toolbin).
export OCISEEK_TOOLS_BIN := $(BIN)/tools

# Packages whose tests need root and /dev/fuse; also run with GOMAXPROCS=1,
# where FUSE deadlocks show (as go-fuse's own CI does).
FUSE_PKGS ?= ./fs/...

# The tools modules `make tools` builds (see there).
TOOLS := registry olareg containerd nerdctl crictl
COMMA := ,

.PHONY: all build test unit-test fuse-test bench bench-e2e fuzz lint tools demo clean \
	$(addprefix tool-,$(TOOLS))

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# tools: the third-party programs the tests start (registries, containerd and
# its clients). Each lives in its own module under tools/ so their dependency
# graphs never meet ours. The modules build in parallel, one line each; a tool
# whose binaries are newer than its go.sum is skipped. Builds hold the same
# lock file as internal/toolbin, which builds a missing tool when a test first
# needs it, so `make tools` and a running `go test` never write one at once.
tools:
	@mkdir -p $(OCISEEK_TOOLS_BIN)
	@$(MAKE) --no-print-directory -j $(words $(TOOLS)) $(addprefix tool-,$(TOOLS))

# build_tool: $(1) module under tools/, $(2) binaries it makes, $(3) go build
# arguments after -o, $(4) extra environment. Output is shown only on failure.
define build_tool
	@stale=; for b in $(2); do \
	  [ "$(OCISEEK_TOOLS_BIN)/$$b" -nt tools/$(1)/go.sum ] || stale=1; done; \
	if [ -z "$$stale" ]; then echo "tools: $(1) up to date"; exit 0; fi; \
	start=$$(date +%s); \
	if out=$$(cd tools/$(1) && $(4) $(FLOCK) $(OCISEEK_TOOLS_BIN)/.build-$(1).lock \
	    $(GO) build -o $(OCISEEK_TOOLS_BIN)/ $(3) 2>&1); then \
	  echo "tools: $(1) built in $$(( $$(date +%s) - start ))s"; \
	else echo "tools: $(1) FAILED:"; echo "$$out"; exit 1; fi
endef
FLOCK := $(shell command -v flock)
# Test tools need no symbols or DWARF: stripping them shortens every link.
TOOL_LDFLAGS := '-ldflags=-s -w'

tool-registry:
	$(call build_tool,registry,registry,$(TOOL_LDFLAGS) github.com/distribution/distribution/v3/cmd/registry)
tool-olareg:
	$(call build_tool,olareg,olareg,$(TOOL_LDFLAGS) github.com/olareg/olareg/cmd/olareg)
# no_btrfs: Debian has no btrfs headers and we never use that snapshotter.
# The demo builds with CONTAINERD_TAGS=$(CONTAINERD_DEMO_TAGS) into its own
# directory: no CRI, devmapper, ZFS or tracing plugins, which it never
# starts, and about half the compile work.
CONTAINERD_TAGS ?= no_btrfs
CONTAINERD_DEMO_TAGS := no_btrfs,no_cri,no_devmapper,no_zfs,no_tracing
tool-containerd:
	$(call build_tool,containerd,containerd ctr containerd-shim-runc-v2,-tags $(CONTAINERD_TAGS) $(TOOL_LDFLAGS) \
	  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
	  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
tool-nerdctl:
	$(call build_tool,nerdctl,nerdctl,$(TOOL_LDFLAGS) github.com/containerd/nerdctl/cmd/nerdctl)
# cri-tools v1.34.0 depends on cri-api/cri-client release candidates the
# checksum database does not list; go.sum in tools/crictl pins them.
tool-crictl:
	$(call build_tool,crictl,crictl,$(TOOL_LDFLAGS) sigs.k8s.io/cri-tools/cmd/crictl,GONOSUMDB=sigs.k8s.io/cri-tools$(COMMA)k8s.io/cri-api$(COMMA)k8s.io/cri-client)

# test: unit and integration tests. -timeout turns a hang into a goroutine dump.
test: tools build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	GOMAXPROCS=1 $(GO) test -count=1 -timeout 15m $(FUSE_PKGS)

# unit-test: every package except integration and FUSE_PKGS, in -short mode:
# no containerd, no FUSE, minutes rather than tens of them. Packages here that
# mount overlay or set trusted xattrs skip those tests unless run as root; the
# registry binaries are built on first use if `make tools` has not run.
UNIT_PKGS = $(filter-out $(shell $(GO) list ./integration/... $(FUSE_PKGS)),$(shell $(GO) list ./...))
unit-test:
	$(GO) test -count=1 -short -timeout 15m $(UNIT_PKGS)

# fuse-test: the FUSE packages alone (root and /dev/fuse), once as usual and
# once with GOMAXPROCS=1 as `make test` runs them.
fuse-test:
	$(GO) test -count=1 -timeout 15m $(FUSE_PKGS)
	GOMAXPROCS=1 $(GO) test -count=1 -timeout 15m $(FUSE_PKGS)

# bench: benchmarks print ratios against baselines measured in the same run.
bench: tools
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

# bench-e2e: the end-to-end benchmark (root; tens of minutes): an image of
# 360 MB, generated once and cached, started by nerdctl on containerd with
# overlayfs (full pull) and with ociseek, alternating, fresh state and
# dropped caches each run, on loopback and on an emulated 100 Mbit/s, 20 ms
# link. LINKS=loopback|shaped|all, RUNS=N; more knobs (OCISEEK_BENCH_SCALE=
# small, another snapshotter) in integration/bench/config.go. Writes
# docs/benchmarks-e2e.md, .png and .json and prints the `bench:` lines.
LINKS ?= all
RUNS  ?= 3
bench-e2e: tools build
	OCISEEK_BENCH_E2E=1 OCISEEK_BENCH_LINKS=$(LINKS) OCISEEK_BENCH_RUNS=$(RUNS) OCISEEK_BENCH_BIN=$(BIN) \
	  $(GO) test -count=1 -run '^TestBenchE2E$$' -v -timeout 300m ./integration/bench/

# fuzz: each fuzz target for FUZZTIME; crashers land in testdata/fuzz and
# become regression tests run by `make test`.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# demo: the main job end to end on built-in defaults (root; installs the
# Debian packages it needs): builds in parallel only what it starts (ociseek,
# containerd with ctr and the runc shim, olareg; 5-6 min on an idle 2-core
# machine the first time, seconds after), then registry, containerd, the
# snapshotter, a lazily started container, the same image with a full pull,
# and the comparison line at the end.
demo:
	GO="$(GO)" BIN="$(BIN)" MAKE="$(MAKE)" sh scripts/demo.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
