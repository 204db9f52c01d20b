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
//
// Signals: SIGTERM stops the daemon and leaves lazy mounts in place, so
// that the next start takes them over (containers keep their root file
// systems while the daemon restarts, as far as the kernel allows); SIGINT
// also unmounts every lazy layer, for a clean shutdown of the node.
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
