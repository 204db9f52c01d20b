package main

import (
	"strings"
	"testing"
)

// TestCleanupsRunNewestFirstOnce checks the order the harness relies on
// (containerd stops before the daemon, the daemon before its directory is
// removed) and that a second run does nothing.
func TestCleanupsRunNewestFirstOnce(t *testing.T) {
	var log strings.Builder
	c := &cleanups{log: &log}
	s := c.scope()
	var order []string
	for _, name := range []string{"dir", "daemon", "containerd"} {
		s.Defer(func() { order = append(order, name) })
	}
	c.run()
	c.run()
	if got := strings.Join(order, ","); got != "containerd,daemon,dir" {
		t.Errorf("cleanups ran as %s, want containerd,daemon,dir once", got)
	}
}

// TestCleanupsScopeReportsFailure checks that the stops see the demo's
// failure (they then print log tails and keep directories) and that
// their messages reach the log writer.
func TestCleanupsScopeReportsFailure(t *testing.T) {
	var log strings.Builder
	c := &cleanups{log: &log}
	s := c.scope()
	if s.Failed() {
		t.Fatal("Failed before any failure")
	}
	c.failed = true
	if !s.Failed() {
		t.Error("Failed is false after the demo failed")
	}
	s.Logf("stop %s: %v", "containerd", "timeout")
	if got := log.String(); got != "stop containerd: timeout\n" {
		t.Errorf("log = %q", got)
	}
}

// TestProgressContinuesScriptNumbering checks the step lines a user sees
// after scripts/demo.sh has shown its three build steps.
func TestProgressContinuesScriptNumbering(t *testing.T) {
	var out strings.Builder
	p := &progress{w: &out, n: 3, total: 3 + ownSteps}
	p.step("starting %s", "olareg")
	p.step("lazy")
	want := "demo: [4/7] starting olareg\ndemo: [5/7] lazy\n"
	if out.String() != want {
		t.Errorf("progress printed %q, want %q", out.String(), want)
	}
}
