package bgfetch

import (
	"context"
	"fmt"
	"time"
)

// Policy says when mounted layers are completed.
type Policy string

const (
	// PolicyIdle completes layers while the node is quiet: no foreground
	// read for QuietPeriod, one step at a time (MaxDeferral bounds the
	// wait on a busy node).
	PolicyIdle Policy = "idle"
	// PolicyFullSpeed completes each layer right after its mount (once
	// the node had StartQuiet without a mount or a foreground transfer),
	// with Parallel range requests ahead of the verification pass, one
	// layer after the other. Foreground reads keep priority: while a foreground
	// transfer runs (and YieldPeriod after), no step starts, background
	// transfers in progress are broken off and none starts; they never
	// take a foreground fetch slot. Verification is the same continuous
	// pass as with PolicyIdle.
	PolicyFullSpeed Policy = "full-speed"
)

// maxYield bounds one wait of a background transfer for foreground ones
// to end, after which the transfer looks again (and, a layer past
// MaxDeferral, goes on).
const maxYield = time.Second

// fullSpeedLayer is implemented by layers that can fetch ahead of their
// completion pass (fs/span's Manager does): parallel range requests in
// flight, each started once wait returns and broken off when the channel
// preempt returned at its start is closed; demand is called around each
// foreground transfer.
type fullSpeedLayer interface {
	FullSpeed(parallel int, wait func(context.Context) error, preempt func() <-chan struct{}, demand func() func())
}

// ParsePolicy returns the policy named s ("" is PolicyIdle).
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return PolicyIdle, nil
	case PolicyIdle, PolicyFullSpeed:
		return p, nil
	}
	return "", fmt.Errorf("background fetch policy %q: want %q or %q", s, PolicyIdle, PolicyFullSpeed)
}

func (s *Scheduler) fullSpeed() bool { return s.opts.Policy == PolicyFullSpeed }

// busyLocked returns how many foreground reads (idle policy: every read;
// full speed: foreground transfers) hold background work back now, and
// how long until the node counts as quiet again after the last one (≤ 0:
// it does). The caller holds s.mu.
func (s *Scheduler) busyLocked(now time.Time) (active int, quiet time.Duration) {
	if s.fullSpeed() {
		return s.demand, s.lastDemand.Add(s.opts.YieldPeriod).Sub(now)
	}
	return s.active, s.lastFg.Add(s.opts.QuietPeriod).Sub(now)
}

// handOver gives a layer added at addedAt what it needs to fetch ahead at
// full speed. Once it has waited MaxDeferral its transfers no longer yield
// to foreground ones (a node whose reads never stop must still complete
// it): the half duty of its steps (pick) then bounds them, since a layer
// fetches at most Parallel segments ahead of its steps.
func (s *Scheduler) handOver(fl fullSpeedLayer, addedAt time.Time) {
	overdue := func() bool { return time.Since(addedAt) > s.opts.MaxDeferral }
	wait := func(ctx context.Context) error {
		if overdue() {
			return nil
		}
		return s.yield(ctx)
	}
	preempt := func() <-chan struct{} {
		if overdue() {
			return nil
		}
		return s.preempt()
	}
	fl.FullSpeed(s.opts.Parallel, wait, preempt, s.Demand)
}

// startWaitLocked returns how long e must still wait before its first
// full-speed step (≤ 0: none): StartQuiet after the last mount and the
// last foreground transfer. The caller holds s.mu.
func (s *Scheduler) startWaitLocked(e *entry, now time.Time) time.Duration {
	if !s.fullSpeed() || e.started {
		return 0
	}
	last := s.lastAdd
	if s.lastDemand.After(last) {
		last = s.lastDemand
	}
	return last.Add(s.opts.StartQuiet).Sub(now)
}

// Demand marks the start of a foreground transfer (a span a read waits
// for, or one fetched ahead of a sequential reader); call the returned func
// when it ends. With the full-speed policy, background transfers and steps
// hold back meanwhile.
func (s *Scheduler) Demand() (done func()) {
	s.mu.Lock()
	if s.demand == 0 {
		s.demandIdle = make(chan struct{})
		close(s.demandStart)
		s.demandStart = make(chan struct{})
	}
	s.demand++
	s.mu.Unlock()
	var ended bool
	return func() {
		s.mu.Lock()
		if ended {
			s.mu.Unlock()
			return
		}
		ended = true
		s.demand--
		s.lastDemand = time.Now()
		if s.demand == 0 {
			close(s.demandIdle)
		}
		s.mu.Unlock()
		s.nudge()
	}
}

// yield blocks while foreground transfers run and for YieldPeriod after
// the last one, at most maxYield in all; it returns
// ctx's error if ctx ends first.
func (s *Scheduler) yield(ctx context.Context) error {
	deadline := time.Now().Add(maxYield)
	for {
		now := time.Now()
		s.mu.Lock()
		active, quiet := s.demand, s.lastDemand.Add(s.opts.YieldPeriod).Sub(now)
		idle := s.demandIdle
		s.mu.Unlock()
		left := deadline.Sub(now)
		if (active == 0 && quiet <= 0) || left <= 0 {
			return nil
		}
		wait := left
		if active == 0 {
			wait = min(quiet, left)
			idle = nil // only the timer can end this wait
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("wait for foreground reads: %w", context.Cause(ctx))
		case <-idle:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// preempt returns a channel closed when a foreground transfer starts:
// already closed while one runs.
func (s *Scheduler) preempt() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.demand > 0 {
		return closedChan()
	}
	return s.demandStart
}

// closedChan returns a closed channel: no foreground read waits yet.
func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
