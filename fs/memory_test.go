package fs

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/fs/span"
)

// keepGoMemoryLimit restores the process's Go memory limit when the test
// ends: WithMemoryLimit sets it for the whole test binary.
func keepGoMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
}

// TestMemoryLimitApplied: an FS made with a 64 MiB limit gives the Go
// runtime what is left after the binary's 20 MiB and the span pool's
// eighth, and shows the three figures as ociseek_fs_memory_limit_bytes.
func TestMemoryLimitApplied(t *testing.T) {
	keepGoMemoryLimit(t)
	reg := prometheus.NewPedanticRegistry()
	newFS(t, newSource(), WithRegisterer(reg), WithMemoryLimit(64<<20))
	const wantGo = 64<<20 - 20<<20 - 8<<20
	if got := debug.SetMemoryLimit(-1); got != wantGo {
		t.Errorf("Go memory limit %d, want %d", got, int64(wantGo))
	}
	want := `
# HELP ociseek_fs_memory_limit_bytes The memory limit (fetch.memory_limit) and its shares: total, go (the Go runtime's soft limit now, as read back from the runtime: at least twice the live heap), span_pool (free span buffers kept).
# TYPE ociseek_fs_memory_limit_bytes gauge
ociseek_fs_memory_limit_bytes{part="go"} 37748736
ociseek_fs_memory_limit_bytes{part="span_pool"} 8388608
ociseek_fs_memory_limit_bytes{part="total"} 67108864
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ociseek_fs_memory_limit_bytes"); err != nil {
		t.Error(err)
	}
}

// TestMemoryLimitBounds: no limit leaves Go's alone; a limit below 32 MiB
// or negative is refused; a large one keeps the pool at its default bound.
func TestMemoryLimitBounds(t *testing.T) {
	keepGoMemoryLimit(t)
	before := debug.SetMemoryLimit(-1)
	newFS(t, newSource(), WithMemoryLimit(0))
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("no limit changed Go's limit from %d to %d", before, got)
	}
	for _, bad := range []int64{-1, 1 << 20, 32<<20 - 1} {
		if _, err := New(t.TempDir(), newSource(), remoteBlobs(), WithMemoryLimit(bad)); err == nil {
			t.Errorf("limit %d accepted", bad)
		}
	}
	if b := budgetFor(1 << 30); b.poolBytes != span.DefaultPoolBytes || b.goLimit != 1<<30-20<<20-span.DefaultPoolBytes {
		t.Errorf("budget of 1 GiB: %+v", b)
	}
}

// TestMemoryLimitFollowsLiveHeap: once mounts settle, a Go share below
// twice the live heap is raised to that, so the collector does not run
// back to back; a share above it stays.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	keepGoMemoryLimit(t)
	r := &memoryRelease{goFloor: 1 << 20}
	r.settle()
	// Any test binary keeps more than half a MiB live; other tests
	// running meanwhile change the exact figure.
	if got, live := debug.SetMemoryLimit(-1), liveHeap(); got <= 1<<20 || got < live {
		t.Errorf("Go limit %d after settling with a 1 MiB share and about %d bytes live, want about %d", got, live, 2*live)
	}
	r = &memoryRelease{goFloor: 1 << 40}
	r.settle()
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("Go limit %d, want the share %d", got, int64(1<<40))
	}
	if got := goLimitFor(10, 100); got != 200 {
		t.Errorf("goLimitFor(10, 100) = %d, want 200", got)
	}
}
