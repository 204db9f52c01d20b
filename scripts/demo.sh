#!/bin/sh
# demo.sh: lazy loading vs a full pull, end to end, on this machine.
#
# Installs the Debian packages it needs, builds only what the demo starts
# (ociseek, ociseek-snapshotter and the demo program; containerd, ctr and
# the runc shim; the olareg registry), reusing binaries that are up to
# date, then runs integration/cmd/demo, which starts olareg, containerd and
# the ociseek-snapshotter in a private directory, pushes a sample image
# with a SOCI index, runs it lazily and after a full overlayfs pull, cleans
# everything up and ends with the line
#   demo: first output after X s lazily (Y MB fetched) vs Z s with a full pull (W MB fetched)
# Safe to run again: nothing is left behind between runs (the generated
# sample layer is cached under $TMPDIR/ociseek-integration-cache).
set -eu

cd "$(dirname "$0")/.."
GO=${GO:-go}
BIN=${BIN:-$PWD/bin}
export CGO_ENABLED=0
# Where the Makefile's tool targets put the binaries, for BIN given.
export OCISEEK_TOOLS_BIN="$BIN/tools"

if [ "$(id -u)" != 0 ]; then
	echo "demo: must run as root (it starts containerd and mounts FUSE file systems)" >&2
	exit 1
fi

# Debian packages: a static busybox for the sample image, runc for
# containerd, fuse3 for fusermount3 and /dev/fuse handling.
missing=""
for pkg in busybox-static runc fuse3; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	echo "demo: installing$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
if [ ! -e /dev/fuse ]; then
	modprobe fuse 2>/dev/null || true
	[ -e /dev/fuse ] || { echo "demo: /dev/fuse is missing (load the fuse module)" >&2; exit 1; }
fi

# The builds run one after another, each on all CPUs: ociseek, containerd
# and olareg share about 500 packages (the standard library, grpc,
# protobuf, containerd's API), which the first build compiles and the later
# ones take from the Go build cache; run at once, each compiled them again.
# Meanwhile the later builds' modules download in the background. From
# empty Go caches the demo took 3 min 48 s to its closing line on an idle
# 2-core machine (417 CPU-seconds; docs/benchmarks.md). Each step
# says when it starts and when it is done (or up to date), and a failed one
# shows its output. The tool builds are the Makefile's (internal/toolbin's
# toolbuild): same pinned modules, same up-to-date rule (binaries newer than
# the module's go.sum), same locks as a test building a missing tool.
logs=$(mktemp -d "${TMPDIR:-/tmp}/ociseek-demo-build.XXXXXX")
downloads=""
trap 'for p in $downloads; do kill "$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
trap 'exit 130' INT TERM

# build N NAME HINT COMMAND...: run COMMAND as step N, with its output
# shown only if it fails.
build() {
	n=$1 name=$2 hint=$3
	shift 3
	echo "demo: [$n/7] building $name ($hint)"
	start=$(date +%s)
	if "$@" >"$logs/$n" 2>&1; then
		if grep -q "up to date" "$logs/$n"; then
			echo "demo: [$n/7] $name up to date"
		else
			echo "demo: [$n/7] $name done in $(($(date +%s) - start)) s"
		fi
	else
		echo "demo: [$n/7] building $name FAILED:" >&2
		cat "$logs/$n" >&2
		exit 1
	fi
}

# A full containerd from `make tools` serves the demo as well; otherwise the
# demo builds its own without the plugins it never starts.
tools_dir=$OCISEEK_TOOLS_BIN
demo_flag=""
if ! $GO run ./internal/toolbin/toolbuild -dir "$tools_dir" -check containerd ctr containerd-shim-runc-v2 2>/dev/null; then
	tools_dir=$BIN/demo-tools
	demo_flag=-demo
fi
mkdir -p "$BIN" "$tools_dir"
for module in containerd olareg; do
	(cd "tools/$module" && $GO mod download >/dev/null 2>&1) &
	downloads="$downloads $!"
done
build 1 "ociseek, ociseek-snapshotter and the demo" "first time: ~2 min" \
	$GO build -o "$BIN/" ./cmd/ociseek ./cmd/ociseek-snapshotter ./integration/cmd/demo
build 2 "containerd, ctr and containerd-shim-runc-v2" "first time: ~1.5 min" \
	$GO run ./internal/toolbin/toolbuild -dir "$tools_dir" $demo_flag containerd
build 3 "the olareg registry" "first time: seconds" \
	$GO run ./internal/toolbin/toolbuild -dir "$tools_dir" olareg
rm -rf "$logs"
trap - EXIT INT TERM
export OCISEEK_TOOLS_BIN="$tools_dir"

# The demo handles ^C itself: it stops what it started and unmounts.
exec "$BIN/demo" -bin "$BIN" -done 3
