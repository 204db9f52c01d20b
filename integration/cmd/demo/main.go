// Command demo shows lazy loading against a full pull on this machine: it
// starts a registry, containerd and the ociseek-snapshotter in a private
// directory, pushes a sample image (busybox and a data layer of more than
// 100 MB) with a SOCI index, runs it lazily, then runs it again after a
// full overlayfs pull, and prints how long each took to the container's
// first output and how much each fetched. Everything it started is stopped
// by PID and everything it mounted is unmounted, also on failure or ^C.
//
// Run it through scripts/demo.sh (make demo), which installs what it needs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}
