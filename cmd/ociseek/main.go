// Command ociseek is the command-line tool of the ociseek project: it builds
// and inspects zTOCs and SOCI indices. Each verb lives in its own file; this
// file only turns the process into a call of run.
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "ociseek: %v\n", err)
	if isUsage(err) {
		os.Exit(2)
	}
	os.Exit(1)
}
