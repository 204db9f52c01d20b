#!/bin/sh
# demo.sh: lazy loading vs a full pull, end to end, on this machine.
#
# Installs the Debian packages it needs, builds in parallel only what the
# demo starts (ociseek, ociseek-snapshotter and the demo program; containerd,
# ctr and the runc shim; the olareg registry), reusing binaries that are up
# to date, then runs integration/cmd/demo, which starts olareg, containerd
# and the ociseek-snapshotter in a private directory, pushes a sample image
# with a SOCI index, runs it lazily and after a full overlayfs pull, cleans
# everything up and ends with the line
#   demo: first output after X s lazily (Y MB fetched) vs Z s with a full pull (W MB fetched)
# Safe to run again: nothing is left behind between runs (the generated
# sample layer is cached under $TMPDIR/ociseek-integration-cache).
set -eu

cd "$(dirname "$0")/.."
GO=${GO:-go}
MAKE=${MAKE:-make}
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

# The three builds run at once, sharing the CPUs: the first-time estimates
# are for an idle 2-core machine with empty Go caches (about 10 CPU-minutes
# in all: containerd 6, ociseek 3, olareg 1.5). Each says when it starts
# and when it is done (or up to date), and a failed one shows its output. The tool builds
# are the Makefile's: same pinned modules, same up-to-date rule (binaries
# newer than the module's go.sum), same lock as internal/toolbin.
logs=$(mktemp -d "${TMPDIR:-/tmp}/ociseek-demo-build.XXXXXX")
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
trap 'exit 130' INT TERM

# build N NAME HINT COMMAND...: run COMMAND in the background as step N.
build() {
	n=$1 name=$2 hint=$3
	shift 3
	echo "demo: [$n/7] building $name ($hint)"
	(
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
	) &
	pids="$pids $!"
}
mkdir -p "$BIN" "$OCISEEK_TOOLS_BIN"
build 1 "ociseek, ociseek-snapshotter and the demo" "first time: ~2-3 min" \
	$GO build -o "$BIN/" ./cmd/ociseek ./cmd/ociseek-snapshotter ./integration/cmd/demo
build 2 "containerd, ctr and containerd-shim-runc-v2" "first time: ~5 min" \
	$MAKE --no-print-directory BIN="$BIN" tool-containerd
build 3 "the olareg registry" "first time: ~1 min" \
	$MAKE --no-print-directory BIN="$BIN" tool-olareg
failed=0
for p in $pids; do
	wait "$p" || failed=1
done
pids=""
[ "$failed" = 0 ] || exit 1
rm -rf "$logs"
trap - EXIT INT TERM

# The demo handles ^C itself: it stops what it started and unmounts.
exec "$BIN/demo" -bin "$BIN" -done 3
