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

.PHONY: all build test unit-test fuse-test bench bench-e2e fuzz lint tools demo clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# tools: the third-party programs the tests start (registries, containerd and
# its clients). Each lives in its own module under tools/ so their dependency
# graphs never meet ours. internal/toolbin holds the one table of how each
# is built; its toolbuild command builds them one after another (they share
# hundreds of packages through the build cache), one line each, skipping a
# tool whose binaries are newer than its go.sum. Builds hold the same lock
# files as a test that builds a missing tool on first use, so `make tools`
# and a running `go test` never write one at once.
TOOLBUILD = $(GO) run ./internal/toolbin/toolbuild
tools:
	@$(TOOLBUILD) $(TOOLS)
tool-%:
	@$(TOOLBUILD) $*

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
# Debian packages it needs): builds only what it starts, one after another
# (ociseek, containerd with ctr and the runc shim, olareg; about 400
# CPU-seconds the first time, seconds after), then registry, containerd, the
# snapshotter, a lazily started container, the same image with a full pull,
# and the comparison line at the end.
demo:
	GO="$(GO)" BIN="$(BIN)" sh scripts/demo.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
