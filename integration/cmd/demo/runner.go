package main

import (
	"fmt"
	"io"

	"github.com/ociseek/ociseek/integration/harness"
)

// cleanups is the demo's list of things to undo: the harness registers the
// stop of each process it starts and the unmount of each directory it
// uses, and run undoes them, newest first, when the demo ends, whether it
// succeeded, failed or was interrupted.
type cleanups struct {
	fns    []func()
	failed bool
	log    io.Writer
}

// scope returns the harness scope that registers into c and reports to
// c.log; Failed is true once run has failed, so the stops print the
// processes' log tails and keep their directories.
func (c *cleanups) scope() harness.Scope {
	return harness.Scope{
		Defer:  func(f func()) { c.fns = append(c.fns, f) },
		Logf:   func(format string, args ...any) { fmt.Fprintf(c.log, format+"\n", args...) },
		Failed: func() bool { return c.failed },
	}
}

// run runs the registered functions, newest first, once.
func (c *cleanups) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// progress numbers the demo's steps, continuing after those the calling
// script has already shown.
type progress struct {
	w        io.Writer
	n, total int
}

// step announces the next step.
func (p *progress) step(format string, args ...any) {
	p.n++
	fmt.Fprintf(p.w, "demo: [%d/%d] %s\n", p.n, p.total, fmt.Sprintf(format, args...))
}
