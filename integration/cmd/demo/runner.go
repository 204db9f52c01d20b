package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// runner gives the harness (and regtest, which wants a testing.TB) the
// test-like lifecycle the demo needs: cleanups run last-in first-out when
// the demo ends, and Fatalf stops the demo after running them.
type runner struct {
	// testing.TB is nil: it only makes runner satisfy the interface. The
	// methods below are the ones the harness and regtest call.
	testing.TB
	dir      string
	log      io.Writer
	cleanups []func()
	failed   bool
}

// fatal is the panic value of Fatalf, recovered by finish.
type fatal struct{ msg string }

func (r *runner) Helper()                 {}
func (r *runner) Cleanup(f func())        { r.cleanups = append(r.cleanups, f) }
func (r *runner) Failed() bool            { return r.failed }
func (r *runner) Name() string            { return "demo" }
func (r *runner) Logf(f string, a ...any) { fmt.Fprintf(r.log, f+"\n", a...) }
func (r *runner) Log(a ...any)            { fmt.Fprintln(r.log, a...) }
func (r *runner) Errorf(f string, a ...any) {
	r.failed = true
	r.Logf(f, a...)
}
func (r *runner) Fatalf(f string, a ...any) {
	r.failed = true
	panic(fatal{fmt.Sprintf(f, a...)})
}
func (r *runner) Fatal(a ...any) {
	r.failed = true
	panic(fatal{fmt.Sprint(a...)})
}

// TempDir returns a fresh directory under the demo's directory.
func (r *runner) TempDir() string {
	d, err := os.MkdirTemp(r.dir, "tmp-")
	if err != nil {
		r.Fatalf("temp dir: %v", err)
	}
	return d
}

// finish runs the cleanups, newest first, and turns a Fatalf panic into
// an error. Deferred by run.
func (r *runner) finish(err *error) {
	p := recover()
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	if f, ok := p.(fatal); ok {
		*err = fmt.Errorf("%s", f.msg)
	} else if p != nil {
		panic(p)
	}
	if r.dir != "" && !r.failed {
		_ = os.RemoveAll(filepath.Clean(r.dir))
	}
}
