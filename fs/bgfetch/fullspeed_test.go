package bgfetch

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fullLayer is a stepLayer that records what FullSpeed gave it and the
// order its steps ran in, among others.
type fullLayer struct {
	stepLayer
	name     string
	log      *stepLog
	parallel int
	wait     func(context.Context) error
	preempt  func() <-chan struct{}
	demand   func() func()
}

type stepLog struct {
	mu    sync.Mutex
	steps []string
}

func (l *fullLayer) FullSpeed(parallel int, wait func(context.Context) error, preempt func() <-chan struct{}, demand func() func()) {
	l.parallel, l.wait, l.preempt, l.demand = parallel, wait, preempt, demand
}

func (l *fullLayer) FetchNext(ctx context.Context) (int64, bool, error) {
	if l.log != nil {
		l.log.mu.Lock()
		l.log.steps = append(l.log.steps, l.name)
		l.log.mu.Unlock()
	}
	return l.stepLayer.FetchNext(ctx)
}

// TestFullSpeedStartsAtMount: with the full-speed policy a layer is
// completed right after it is added, although the quiet period is an hour
// and a (cache-hit) foreground read is in progress all along; the layer is
// told the parallelism.
func TestFullSpeedStartsAtMount(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed, Parallel: 3, QuietPeriod: time.Hour, MaxDeferral: time.Hour})
	done := s.Foreground()
	defer done()
	l := &fullLayer{stepLayer: stepLayer{steps: 10, size: 1}}
	s.Add("a", l)
	waitFor(t, 5*time.Second, "layer done", func() bool { st, _ := s.Status("a"); return st.Done })
	if l.parallel != 3 || l.wait == nil || l.preempt == nil || l.demand == nil {
		t.Fatalf("FullSpeed got parallel %d, wait set %v, preempt set %v, demand set %v", l.parallel, l.wait != nil, l.preempt != nil, l.demand != nil)
	}
}

// TestFullSpeedYieldsToDemand: while a foreground read waits on the
// network, no step starts and background transfers (wait) are held; both
// resume YieldPeriod after it ends.
func TestFullSpeedYieldsToDemand(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed, YieldPeriod: 20 * time.Millisecond, MaxDeferral: time.Hour})
	read := s.Demand()
	l := &fullLayer{stepLayer: stepLayer{steps: 3, size: 1}}
	s.Add("a", l)
	waited := make(chan time.Time, 1)
	go func() {
		if err := l.wait(context.Background()); err != nil {
			t.Errorf("wait: %v", err)
		}
		waited <- time.Now()
	}()
	time.Sleep(100 * time.Millisecond)
	if n := l.taken.Load(); n != 0 {
		t.Fatalf("%d steps taken during a foreground read", n)
	}
	select {
	case <-waited:
		t.Fatal("a background transfer went on during a foreground read")
	default:
	}
	ended := time.Now()
	read()
	read() // a second call is harmless
	if at := <-waited; at.Sub(ended) < 20*time.Millisecond {
		t.Errorf("transfers resumed %v after the read, want at least the yield period", at.Sub(ended))
	}
	waitFor(t, 5*time.Second, "layer done", func() bool { st, _ := s.Status("a"); return st.Done })
}

// TestFullSpeedPreempt: the channel a transfer watches is closed when a
// foreground transfer starts, and already closed while one runs; a new one is handed out after.
func TestFullSpeedPreempt(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed})
	before := s.preempt()
	read := s.Demand()
	select {
	case <-before:
	default:
		t.Fatal("a foreground read started and the transfer was not told")
	}
	select {
	case <-s.preempt():
	default:
		t.Fatal("a transfer starting during a foreground read is not told at once")
	}
	read()
	select {
	case <-s.preempt():
		t.Fatal("with no foreground read, a new transfer is told to stop")
	default:
	}
}

// TestFullSpeedWaitEndsWithContext: a held transfer whose context ends
// returns at once with its error.
func TestFullSpeedWaitEndsWithContext(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed})
	defer s.Demand()()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.yield(ctx); err == nil {
		t.Fatal("wait with an ended context returned nil")
	}
}

// TestFullSpeedOneLayerAfterTheOther: layers are completed in the order
// they were added, each before the next starts, so the first mounted is
// complete soonest.
func TestFullSpeedOneLayerAfterTheOther(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed})
	log := &stepLog{}
	a := &fullLayer{stepLayer: stepLayer{steps: 5, size: 1}, name: "a", log: log}
	b := &fullLayer{stepLayer: stepLayer{steps: 5, size: 1}, name: "b", log: log}
	s.Add("a", a)
	s.Add("b", b)
	waitFor(t, 5*time.Second, "both done", func() bool {
		sa, _ := s.Status("a")
		sb, _ := s.Status("b")
		return sa.Done && sb.Done
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	seenB := false
	for _, name := range log.steps {
		if name == "b" {
			seenB = true
		} else if seenB {
			t.Fatalf("steps ran in the order %v: a after b", log.steps)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": PolicyIdle, "idle": PolicyIdle, "full-speed": PolicyFullSpeed} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicy("fast"); err == nil {
		t.Error(`ParsePolicy("fast") succeeded`)
	}
}

// TestFullSpeedStartQuiet: a layer's first step waits StartQuiet after its
// mount, and a foreground transfer meanwhile pushes it back by as much; a
// layer that started waits only YieldPeriod after a transfer.
func TestFullSpeedStartQuiet(t *testing.T) {
	const quiet = time.Second
	s := newScheduler(t, Options{Policy: PolicyFullSpeed, StartQuiet: quiet, MaxDeferral: time.Hour})
	l := &fullLayer{stepLayer: stepLayer{steps: 100000, size: 1}}
	s.Add("a", l)
	time.Sleep(quiet / 2)
	s.Demand()() // a transfer of the container's start
	read := time.Now()
	waitFor(t, 10*time.Second, "first step", func() bool { return l.taken.Load() > 0 })
	if since := time.Since(read); since < quiet {
		t.Fatalf("first step %v after the last foreground transfer, want StartQuiet (%v)", since, quiet)
	}
	s.Demand()()
	read = time.Now()
	before := l.taken.Load()
	waitFor(t, 10*time.Second, "steps after a transfer", func() bool { return l.taken.Load() > before })
	if since := time.Since(read); since >= quiet {
		t.Errorf("a started layer waited %v after a transfer, want the yield period only", since)
	}
}

// TestFullSpeedNeverStarved: while foreground transfers never stop, a
// layer past MaxDeferral still completes: its transfers no longer wait or
// break off, and its steps run at half duty.
func TestFullSpeedNeverStarved(t *testing.T) {
	s := newScheduler(t, Options{Policy: PolicyFullSpeed, MaxDeferral: 100 * time.Millisecond, StartQuiet: time.Millisecond})
	read := s.Demand()
	defer read()
	l := &fullLayer{stepLayer: stepLayer{steps: 5, size: 1}}
	s.Add("a", l)
	if l.preempt() == nil {
		t.Fatal("a fresh layer's transfers would not yield to a foreground one")
	}
	waitFor(t, 10*time.Second, "layer done", func() bool { st, _ := s.Status("a"); return st.Done })
	if l.preempt() != nil {
		t.Error("an overdue layer's transfers are still broken off")
	}
	start := time.Now()
	if err := l.wait(context.Background()); err != nil || time.Since(start) > 500*time.Millisecond {
		t.Errorf("an overdue layer's transfer waited %v (%v)", time.Since(start), err)
	}
}
