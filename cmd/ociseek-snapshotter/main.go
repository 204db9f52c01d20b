// Command ociseek-snapshotter is ociseek's containerd remote snapshotter
// daemon. containerd reaches it as a proxy snapshot plugin over a unix
// socket (see contrib/containerd-config.toml); it serves indexed layers
// lazily over FUSE and leaves the rest to containerd.
//
// Usage:
//
//	ociseek-snapshotter [--config FILE] [--root DIR] [--address SOCKET] [--log-level LEVEL]
//	ociseek-snapshotter config default   # print every option with its default
//	ociseek-snapshotter config dump      # print the configuration in effect
//	ociseek-snapshotter config migrate [-o FILE] [--hosts-dir DIR] SOCI_CONFIG
//	                                     # convert a soci-snapshotter config.toml
//
// Signals: SIGTERM stops the daemon and leaves lazy mounts in place, so
// that the next start takes them over: it releases the dead mounts and
// mounts the layers again for new containers (containers already running
// on a lazy layer get ESTALE from it, since its FUSE server is gone); the
// background fetcher ends with the process, which the span cache survives
// (each span is written to a temporary file and renamed into place). SIGINT
// unmounts every lazy layer, stops background fetching and closes the span
// cache before exiting, for a clean shutdown of the node.
//
// Under systemd (contrib/systemd) the daemon takes its socket from socket
// activation and, as a Type=notify service, reports READY=1 on
// $NOTIFY_SOCKET once the socket serves; containerd, ordered after it,
// then finds lazy snapshots already restored.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ociseek-snapshotter:", err)
		os.Exit(1)
	}
}
