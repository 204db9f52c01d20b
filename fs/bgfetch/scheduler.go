// Package bgfetch completes mounted layers in the background: it drives each
// layer's step function (fs/span's Manager.FetchNext) round robin until the
// layer reports done, so that every span ends up verified in the local cache
// and the layer's digest and TOC are checked.
//
// Concepts:
//   - Foreground first: while any foreground read is in progress, and for a
//     quiet period after the last one ends or a layer is added, no step
//     starts. A step already running (one span) is allowed to finish.
//     Readers signal through Foreground, which fs/span calls around every
//     read.
//   - Never starved: a layer mounted more than MaxDeferral ago is not held
//     back by foreground reads any more. While reads go on, such layers
//     still take steps, each followed by a pause as long as the step took,
//     so background work gets at most half of the worker and every mounted
//     layer is verified in bounded time even on a node that is never
//     quiet.
//   - Every step is bounded by StepTimeout: one stalled registry cannot
//     hold up the completion of every other layer.
//   - Rate limit: the bytes each step fetched are charged to a token bucket
//     (golang.org/x/time/rate) before the next step runs.
//   - A step that fails (registry down) is retried after a delay; a layer
//     that reports done (complete, or failed verification) is finished.
//
// Those are the rules of the idle policy (PolicyIdle). With
// PolicyFullSpeed (fullspeed.go) a layer is completed right after its
// mount, layers one after the other, with parallel range requests ahead of
// each step, and only foreground transfers hold it back (for YieldPeriod
// after the last one, rather than QuietPeriod).
//
// One worker goroutine runs the steps, so background work never takes more
// than one core of a small node. Close cancels it and waits.
package bgfetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Layer is one layer to complete. FetchNext does one bounded step of work,
// returning the bytes it fetched and whether the layer needs no more steps;
// an error with done=false is transient and the step is retried later.
// Calls never overlap for one Layer.
type Layer interface {
	FetchNext(ctx context.Context) (fetched int64, done bool, err error)
}

// progresser is implemented by layers that can tell how far they are
// (fs/span's Manager does).
type progresser interface {
	Progress() (fetched, total int64)
}

// Options holds the scheduler's knobs; zero values give the defaults.
type Options struct {
	// BytesPerSecond limits the background fetch rate; 0 means unlimited.
	BytesPerSecond float64
	// QuietPeriod is how long after the last foreground read the
	// background work resumes (default 200ms).
	QuietPeriod time.Duration
	// RetryDelay is the wait before retrying a layer whose step failed
	// (default 2s).
	RetryDelay time.Duration
	// MaxDeferral is how long after its mount a layer may be held back by
	// foreground reads; after that it takes steps at up to half duty
	// while reads go on (default 30s).
	MaxDeferral time.Duration
	// StepTimeout bounds one step (default 2m); a step that times out is
	// a failed step, retried after RetryDelay.
	StepTimeout time.Duration
	// Policy is when layers are completed (default PolicyIdle; see
	// fullspeed.go).
	Policy Policy
	// Parallel is how many range requests a full-speed completion keeps
	// in flight (default 4).
	Parallel int
	// YieldPeriod is how long after the last foreground transfer
	// full-speed completion resumes (default 50ms).
	YieldPeriod time.Duration
	// StartQuiet is how long full-speed completion of a layer waits,
	// before its first step, after the last mount and the last
	// foreground transfer (default 1s): the reads that start a container
	// come first, and no background byte goes before them.
	StartQuiet time.Duration
}

// Status is what the scheduler knows about one layer.
type Status struct {
	// Fetched and Total are the layer's progress in compressed bytes, when
	// the layer reports it (0/0 otherwise).
	Fetched, Total int64
	// Done is true once the layer needs no more background work.
	Done bool
	// Err is the last step's error (nil after a successful step).
	Err error
}

// ErrUnknownLayer reports a Status query for a layer never added.
var ErrUnknownLayer = errors.New("layer not scheduled")

type entry struct {
	layer   Layer
	done    bool
	err     error
	retryAt time.Time
	addedAt time.Time
	started bool // took a step (full speed: StartQuiet is over for it)
}

// Scheduler completes layers in the background. It is safe for concurrent
// use.
type Scheduler struct {
	opts    Options
	limiter *rate.Limiter
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	wake    chan struct{} // nudges the worker; capacity 1

	// mu guards the layer table, the round-robin position and the
	// foreground counters.
	mu     sync.Mutex
	layers map[string]*entry
	order  []string
	next   int
	active int       // foreground reads in progress
	lastFg time.Time // when the last foreground read ended, or a layer was added
	// notBefore is when the next step may start while foreground reads
	// hold the node busy: the last step's end plus its length.
	notBefore time.Time
	// Full-speed policy: foreground transfers in progress, when
	// the last one ended, a channel closed when none is left and one
	// closed when the next starts.
	demand      int
	lastDemand  time.Time
	demandIdle  chan struct{}
	demandStart chan struct{}
	lastAdd     time.Time // when the last layer was added
}

// New starts a scheduler; Close stops it.
func New(opts Options) *Scheduler {
	if opts.QuietPeriod <= 0 {
		opts.QuietPeriod = 200 * time.Millisecond
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 2 * time.Second
	}
	if opts.MaxDeferral <= 0 {
		opts.MaxDeferral = 30 * time.Second
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 2 * time.Minute
	}
	if opts.Policy == "" {
		opts.Policy = PolicyIdle
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.YieldPeriod <= 0 {
		opts.YieldPeriod = 50 * time.Millisecond
	}
	if opts.StartQuiet <= 0 {
		opts.StartQuiet = time.Second
	}
	s := &Scheduler{opts: opts, layers: map[string]*entry{}, wake: make(chan struct{}, 1),
		limiter: rate.NewLimiter(rate.Inf, 0), demandIdle: closedChan(), demandStart: make(chan struct{})}
	if opts.BytesPerSecond > 0 {
		burst := int(max(opts.BytesPerSecond/4, 1<<20))
		s.limiter = rate.NewLimiter(rate.Limit(opts.BytesPerSecond), burst)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.run()
	return s
}

// Add schedules layer under id (e.g. its mountpoint). Adding an id again
// replaces the layer. With the idle policy the quiet period starts again: a
// layer is added when it is mounted, just before the container it belongs
// to starts reading it, and those first reads must not queue behind a
// background transfer (nor the daemon's memory grow by a whole layer's
// spans before anyone asked). With the full-speed policy completion starts
// at once, and foreground reads get the link by holding it back.
func (s *Scheduler) Add(id string, layer Layer) {
	if s.fullSpeed() {
		if fl, ok := layer.(fullSpeedLayer); ok {
			s.handOver(fl, time.Now())
		}
	}
	s.mu.Lock()
	if s.fullSpeed() {
		s.lastAdd = time.Now()
	} else {
		s.lastFg = time.Now()
	}
	if _, ok := s.layers[id]; !ok {
		s.order = append(s.order, id)
	}
	s.layers[id] = &entry{layer: layer, addedAt: time.Now()}
	s.mu.Unlock()
	s.nudge()
}

// Remove unschedules id (a step already running for it finishes first).
func (s *Scheduler) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.layers, id)
	for i, o := range s.order {
		if o == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}

// Status returns what is known about layer id.
func (s *Scheduler) Status(id string) (Status, error) {
	s.mu.Lock()
	e, ok := s.layers[id]
	var st Status
	if ok {
		st = Status{Done: e.done, Err: e.err}
	}
	s.mu.Unlock()
	if !ok {
		return Status{}, fmt.Errorf("status of %q: %w", id, ErrUnknownLayer)
	}
	if p, ok := e.layer.(progresser); ok {
		st.Fetched, st.Total = p.Progress()
	}
	return st, nil
}

// Foreground marks the start of a foreground read; call the returned func
// when it ends. Background steps do not start meanwhile.
func (s *Scheduler) Foreground() (done func()) {
	s.mu.Lock()
	s.active++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.active--
			s.lastFg = time.Now()
			s.mu.Unlock()
			s.nudge()
		})
	}
}

// Close stops the worker and waits for it. Layers are left as they are.
func (s *Scheduler) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Scheduler) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) run() {
	defer s.wg.Done()
	for {
		e, ok := s.waitForWork()
		if !ok {
			return
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, s.opts.StepTimeout)
		n, done, err := e.layer.FetchNext(ctx)
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		end := time.Now()
		s.mu.Lock()
		s.notBefore = end.Add(end.Sub(start))
		e.done, e.err = done, err
		if err != nil && !done {
			e.retryAt = time.Now().Add(s.opts.RetryDelay)
		}
		s.mu.Unlock()
		if err := s.charge(n); err != nil {
			return
		}
	}
}

// charge waits until the rate limit allows n more bytes.
func (s *Scheduler) charge(n int64) error {
	for n > 0 {
		chunk := min(n, int64(s.limiter.Burst()))
		if s.limiter.Limit() == rate.Inf {
			return nil
		}
		if err := s.limiter.WaitN(s.ctx, int(chunk)); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}

// waitForWork blocks until a layer may take a step now and returns it; ok
// is false once the scheduler is closed.
func (s *Scheduler) waitForWork() (*entry, bool) {
	for {
		e, wait := s.pick()
		if e != nil {
			return e, true
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-s.ctx.Done():
			return nil, false
		case <-s.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// pick returns the next runnable layer round robin, or how long to wait
// before one may be (0: until nudged).
func (s *Scheduler) pick() (*entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	active, quiet := s.busyLocked(now)
	if s.fullSpeed() {
		s.next = 0 // one layer after the other, each at full speed
	}
	if active == 0 && quiet <= 0 {
		return s.started(s.nextRunnable(0, func(e *entry) time.Duration {
			return max(e.retryAt.Sub(now), s.startWaitLocked(e, now))
		}))
	}
	// Foreground reads hold the node busy (quiet > 0 is how long until it
	// counts as quiet again; 0 with reads in progress): only layers held
	// back longer than MaxDeferral may step, and only at half duty.
	if wait := s.notBefore.Sub(now); wait > 0 {
		return nil, soonestOf(quiet, wait)
	}
	return s.started(s.nextRunnable(quiet, func(e *entry) time.Duration {
		return max(e.addedAt.Add(s.opts.MaxDeferral).Sub(now), e.retryAt.Sub(now))
	}))
}

// started marks the entry pick returns as started; the caller holds s.mu.
func (s *Scheduler) started(e *entry, wait time.Duration) (*entry, time.Duration) {
	if e != nil {
		e.started = true
	}
	return e, wait
}

// nextRunnable walks the layers round robin from s.next and returns the
// first one not done whose wait (how long until it may step) is over, or
// the shortest wait among them and soonest. The caller holds s.mu.
func (s *Scheduler) nextRunnable(soonest time.Duration, wait func(*entry) time.Duration) (*entry, time.Duration) {
	for range s.order {
		s.next %= len(s.order)
		e := s.layers[s.order[s.next]]
		s.next++
		if e.done {
			continue
		}
		if d := wait(e); d > 0 {
			soonest = soonestOf(soonest, d)
			continue
		}
		return e, 0
	}
	return nil, soonest
}

// soonestOf returns the shorter of two positive waits; a wait ≤ 0 means
// "none" and is ignored.
func soonestOf(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
