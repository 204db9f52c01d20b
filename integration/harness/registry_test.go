package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/internal/toolbin"
)

// testScope is a Scope whose cleanups the test runs itself, so it can look
// at what is left afterwards.
type testScope struct {
	fns    []func()
	logs   []string
	failed bool
}

func (s *testScope) scope() Scope {
	return Scope{
		Defer:  func(f func()) { s.fns = append(s.fns, f) },
		Logf:   func(format string, args ...any) { s.logs = append(s.logs, fmt.Sprintf(format, args...)) },
		Failed: func() bool { return s.failed },
	}
}

func (s *testScope) end() {
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.fns = nil
}

// TestStartRegistryInServesAndStopsAtScopeEnd starts olareg through the
// error-returning API the demo uses, proxies it, and checks that ending
// the scope stops the process and closes the proxy, with nothing logged.
func TestStartRegistryInServesAndStopsAtScopeEnd(t *testing.T) {
	bin := toolbin.Path(t, "olareg")
	var s testScope
	defer s.end()
	reg, err := StartRegistryIn(s.scope(), bin, filepath.Join(t.TempDir(), "reg"))
	if err != nil {
		t.Fatalf("StartRegistryIn: %v", err)
	}
	proxy, err := StartCountingProxyIn(s.scope(), reg.Host)
	if err != nil {
		t.Fatalf("StartCountingProxyIn: %v", err)
	}
	if err := registryReady(proxy.Host); err != nil {
		t.Fatalf("registry through the proxy: %v", err)
	}
	pid := reg.PID()
	s.end()
	if !reg.Exited() {
		t.Errorf("olareg (pid %d) still runs after the scope ended", pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), "olareg") {
			t.Errorf("olareg pid %d is still in /proc", pid)
		}
	}
	if err := registryReady(proxy.Host); err == nil {
		t.Errorf("proxy %s still answers after the scope ended", proxy.Host)
	}
	if len(s.logs) > 0 {
		t.Errorf("stopping logged problems: %q", s.logs)
	}
}

// TestStartRegistryInReportsBadBinary checks that a registry that cannot
// start is an error naming it, not a panic or a hang, and that nothing is
// left registered to undo.
func TestStartRegistryInReportsBadBinary(t *testing.T) {
	var s testScope
	defer s.end()
	_, err := StartRegistryIn(s.scope(), filepath.Join(t.TempDir(), "no-such-olareg"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "olareg") {
		t.Fatalf("StartRegistryIn with a missing binary: err = %v, want an error naming olareg", err)
	}
	if len(s.fns) != 0 {
		t.Errorf("%d cleanups registered for a process that never started", len(s.fns))
	}
}
