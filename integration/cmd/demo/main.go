// Command demo shows lazy loading against a full pull on this machine: it
// starts a registry (olareg), containerd and the ociseek-snapshotter in a
// private directory, pushes a sample image (busybox and a data layer of
// more than 100 MB) with a SOCI index, runs it lazily, then runs it again
// after a full overlayfs pull, and prints how long each took to the
// container's first output and how much each fetched. Everything it
// started is stopped by PID and everything it mounted is unmounted, also on
// failure or ^C.
//
// Run it through scripts/demo.sh (make demo), which installs what it needs
// and builds the binaries in parallel, then passes -bin and -done. Run
// alone, it builds what is missing itself, one module after another.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var opts options
	flag.StringVar(&opts.bin, "bin", "", "directory holding freshly built ociseek and ociseek-snapshotter (default: build them)")
	flag.IntVar(&opts.done, "done", 0, "number of steps the calling script has already shown")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, opts, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}
