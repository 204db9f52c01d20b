#!/bin/sh
# demo.sh: lazy loading vs a full pull, end to end, on this machine.
#
# Installs what it needs (Debian packages, the pinned tool binaries), then
# runs integration/cmd/demo, which starts a registry, containerd and the
# ociseek-snapshotter in a private directory, pushes a sample image with a
# SOCI index, runs it lazily and after a full overlayfs pull, cleans
# everything up and ends with the line
#   demo: first output after X s lazily (Y MB fetched) vs Z s with a full pull (W MB fetched)
# Safe to run again: nothing is left behind between runs (the generated
# sample layer is cached under $TMPDIR/ociseek-integration-cache).
set -eu

cd "$(dirname "$0")/.."
GO=${GO:-go}

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

# Tool binaries, built from the pinned tool modules.
export OCISEEK_TOOLS_BIN="${OCISEEK_TOOLS_BIN:-$PWD/bin/tools}"
for t in registry containerd ctr containerd-shim-runc-v2; do
	if [ ! -x "$OCISEEK_TOOLS_BIN/$t" ]; then
		make tools
		break
	fi
done
if [ ! -x "$OCISEEK_TOOLS_BIN/containerd-shim-runc-v2" ]; then
	# Older Makefiles build containerd and ctr only; the shim comes from the
	# same pinned module.
	(cd tools/containerd && CGO_ENABLED=0 $GO build -tags no_btrfs -o "$OCISEEK_TOOLS_BIN/" \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
fi

CGO_ENABLED=0 exec $GO run ./integration/cmd/demo
