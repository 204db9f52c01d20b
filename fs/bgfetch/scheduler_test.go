package bgfetch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stepLayer is a Layer of a fixed number of steps of a fixed size. (The
// real layer, fs/span's Manager, is exercised in integration_test.go; this
// one isolates the scheduling rules.)
type stepLayer struct {
	steps, size int64
	taken       atomic.Int64
	failFirst   atomic.Int64 // steps that fail before any succeeds
	block       bool         // FetchNext blocks until ctx ends
	mu          sync.Mutex
	overlapping bool
	running     bool
}

func (l *stepLayer) FetchNext(ctx context.Context) (int64, bool, error) {
	l.mu.Lock()
	if l.running {
		l.overlapping = true
	}
	l.running = true
	l.mu.Unlock()
	defer func() { l.mu.Lock(); l.running = false; l.mu.Unlock() }()
	if l.block {
		<-ctx.Done()
		return 0, false, ctx.Err()
	}
	if l.failFirst.Add(-1) >= 0 {
		return 0, false, errors.New("registry down")
	}
	n := l.taken.Add(1)
	return l.size, n >= l.steps, nil
}

func (l *stepLayer) Progress() (int64, int64) { return l.taken.Load() * l.size, l.steps * l.size }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newScheduler(t *testing.T, opts Options) *Scheduler {
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCompletesAllLayers(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: time.Millisecond})
	a, b := &stepLayer{steps: 20, size: 10}, &stepLayer{steps: 5, size: 10}
	s.Add("a", a)
	s.Add("b", b)
	waitFor(t, 5*time.Second, "both layers done", func() bool {
		sa, _ := s.Status("a")
		sb, _ := s.Status("b")
		return sa.Done && sb.Done
	})
	st, err := s.Status("a")
	if err != nil || st.Fetched != 200 || st.Total != 200 {
		t.Fatalf("status a: %+v %v", st, err)
	}
	if a.taken.Load() != 20 || b.taken.Load() != 5 {
		t.Fatalf("steps taken: a=%d b=%d", a.taken.Load(), b.taken.Load())
	}
	if _, err := s.Status("c"); !errors.Is(err, ErrUnknownLayer) {
		t.Fatalf("unknown layer: %v", err)
	}
}

func TestYieldsToForeground(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: 50 * time.Millisecond})
	done := s.Foreground()
	l := &stepLayer{steps: 1000, size: 1}
	s.Add("l", l)
	time.Sleep(200 * time.Millisecond)
	if n := l.taken.Load(); n != 0 {
		t.Fatalf("%d background steps ran during a foreground read", n)
	}
	done()
	waitFor(t, 5*time.Second, "background to resume", func() bool { return l.taken.Load() > 0 })
	// A new foreground read pauses it again (a step already running may
	// finish).
	done = s.Foreground()
	time.Sleep(20 * time.Millisecond)
	before := l.taken.Load()
	time.Sleep(100 * time.Millisecond)
	if after := l.taken.Load(); after > before+1 {
		t.Fatalf("%d steps ran while a foreground read was active", after-before)
	}
	done()
	done() // a second call is harmless
}

// TestNewLayerWaitsQuietPeriod checks that a layer just added (mounted, its
// container about to start) gets the quiet period before background steps,
// even though no foreground read has happened yet.
func TestNewLayerWaitsQuietPeriod(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: 300 * time.Millisecond})
	l := &stepLayer{steps: 1000, size: 1}
	added := time.Now()
	s.Add("l", l)
	waitFor(t, 5*time.Second, "background to start", func() bool { return l.taken.Load() > 0 })
	if waited := time.Since(added); waited < 300*time.Millisecond {
		t.Fatalf("first background step %v after Add, want the 300ms quiet period first", waited)
	}
}

func TestRateLimit(t *testing.T) {
	const rate = 4 << 20
	s := newScheduler(t, Options{BytesPerSecond: rate, QuietPeriod: time.Millisecond})
	l := &stepLayer{steps: 1 << 20, size: 256 << 10}
	start := time.Now()
	s.Add("l", l)
	time.Sleep(700 * time.Millisecond)
	got := float64(l.taken.Load() * l.size)
	elapsed := time.Since(start).Seconds()
	// The bucket starts full (burst: a quarter second's worth, at least
	// 1 MiB) and a step is charged after it ran, so allow both on top.
	limit := rate*elapsed + float64(s.limiter.Burst()) + float64(l.size)
	if got > limit {
		t.Fatalf("background fetched %.0f bytes in %.2fs, limit allows %.0f", got, elapsed, limit)
	}
	if got < rate*elapsed*0.5 {
		t.Fatalf("background fetched %.0f bytes in %.2fs, far under the limit", got, elapsed)
	}
}

func TestRetriesAfterError(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: time.Millisecond, RetryDelay: 100 * time.Millisecond})
	l := &stepLayer{steps: 3, size: 1}
	l.failFirst.Store(2)
	start := time.Now()
	s.Add("l", l)
	waitFor(t, 5*time.Second, "layer done", func() bool { st, _ := s.Status("l"); return st.Done })
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("two failures retried within %v, want ≥ 2 retry delays", d)
	}
	if st, _ := s.Status("l"); st.Err != nil {
		t.Fatalf("error kept after success: %v", st.Err)
	}
}

func TestCloseCancelsRunningStep(t *testing.T) {
	s := New(Options{QuietPeriod: time.Millisecond})
	l := &stepLayer{block: true}
	s.Add("l", l)
	waitFor(t, 5*time.Second, "step to start", func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.running })
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if l.overlapping {
		t.Fatal("steps of one layer overlapped")
	}
}

func TestRemove(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: time.Millisecond, BytesPerSecond: 1000})
	l := &stepLayer{steps: 1 << 30, size: 100}
	s.Add("l", l)
	waitFor(t, 5*time.Second, "a step", func() bool { return l.taken.Load() > 0 })
	s.Remove("l")
	time.Sleep(300 * time.Millisecond)
	before := l.taken.Load()
	time.Sleep(300 * time.Millisecond)
	if l.taken.Load() != before {
		t.Fatal("removed layer still fetched")
	}
}

// TestOverdueLayerStepsWhileBusy: on a node whose foreground reads never
// stop, a layer mounted longer than MaxDeferral ago still completes (at
// reduced duty), instead of waiting for a quiet moment that never comes.
func TestOverdueLayerStepsWhileBusy(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: time.Hour, MaxDeferral: 100 * time.Millisecond})
	done := s.Foreground()
	defer done()
	l := &stepLayer{steps: 20, size: 1}
	s.Add("l", l)
	waitFor(t, 10*time.Second, "the busy node's layer to complete", func() bool {
		st, _ := s.Status("l")
		return st.Done
	})
}

// TestStalledStepTimesOut: a step that never returns (a registry that
// stalls) is cut off by StepTimeout, counted as a failed step, and the
// other layers complete meanwhile.
func TestStalledStepTimesOut(t *testing.T) {
	s := newScheduler(t, Options{QuietPeriod: time.Millisecond, StepTimeout: 50 * time.Millisecond, RetryDelay: 10 * time.Millisecond})
	stalled, ok := &stepLayer{block: true}, &stepLayer{steps: 10, size: 1}
	s.Add("stalled", stalled)
	s.Add("ok", ok)
	waitFor(t, 10*time.Second, "the healthy layer to complete", func() bool {
		st, _ := s.Status("ok")
		return st.Done
	})
	waitFor(t, 10*time.Second, "the stalled layer's step to time out", func() bool {
		st, _ := s.Status("stalled")
		return errors.Is(st.Err, context.DeadlineExceeded)
	})
}
