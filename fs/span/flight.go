package span

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/containerd/log"

	"github.com/ociseek/ociseek/ztoc"
)

// flight is one streaming fetch of a whole span, shared by every reader
// that needs the span meanwhile. Two goroutines work on it at once: one
// receives the compressed bytes and hashes them (stream.go, fetchInto), the
// other inflates them as they arrive (inflateInto), so a span costs about
// max(transfer, inflate) rather than their sum. Readers are released as soon
// as the bytes they asked for are inflated and, in strict mode, the whole
// span's digest has matched; in deferred mode without waiting for the
// digest (the flight still verifies the span before it ends).
//
// Its context is cancelled when the last waiter leaves early, so an
// interrupted read stops the transfer, unless the Manager started the
// flight itself (fetch-ahead) or unverified bytes of it were served (they
// must be verified).
type flight struct {
	span      ztoc.Span
	reason    string
	firstNeed int64 // end (in the span) of the read that started it; 0 if none
	cancel    context.CancelFunc

	// Guarded by Manager.mu.
	waiters    int  // readers joined and not left
	keep       bool // started by the Manager: never cancelled by readers leaving
	bufDropped bool // the flight's reference to buf was released

	// comp and data are allocated once the flight holds a fetch slot.
	// comp[:xfer.have] and data[:inflate.produced] are immutable once
	// published.
	comp []byte   // compressed span bytes (pooled, returned when the flight ends)
	data []byte   // uncompressed span bytes: buf.b (also comp for a tar layer)
	buf  *spanBuf // holds data; the flight's reference is dropped once it
	// settled and no waiter is left, since waiters may still take
	// references of their own until then.

	// mu guards everything below; arrived (on mu) wakes the inflater and
	// awaitPrefix when bytes arrive, are used up or inflated, or the
	// transfer ends. Lock order: Manager.mu before flight.mu, never the
	// reverse.
	mu      sync.Mutex
	arrived sync.Cond
	phase   flightPhase // see phase.go
	xfer    transfer    // written by the fetcher
	inflate inflation   // written by the inflater
	wake    wakeup      // what waiting readers asked for
	served  int64       // end of the unverified bytes handed to readers
	err     error       // terminal failure, for waiters (phase failed)
}

func newFlight(s ztoc.Span, reason string, cancel context.CancelFunc) *flight {
	f := &flight{span: s, reason: reason, cancel: cancel, wake: newWakeup()}
	f.arrived.L = &f.mu
	return f
}

// notifyLocked wakes readers waiting for progress and reports whether
// there were any; the caller holds f.mu. Unless forced (a change of state
// rather than more bytes), it wakes them only if one of them can now be
// answered, so a reader waiting for verification is not woken for every
// piece inflated meanwhile.
func (f *flight) notifyLocked(force bool) bool {
	if !f.wake.watched {
		return false
	}
	if !force && !f.servableLocked(f.wake.wantNeed, f.wake.wantAny) {
		return false
	}
	close(f.wake.changed)
	f.wake = newWakeup()
	return true
}

// yieldTo lets a reader just woken run now. The flight's goroutines do not
// block while bytes keep coming, and Go would otherwise leave the reader
// queued behind them until the scheduler preempts one (up to 10 ms): on a
// busy machine that dominated a cold small read.
func yieldTo(woke bool) {
	if woke {
		runtime.Gosched()
	}
}

// untilSettled, as the need of a wait, waits for the flight to end and the
// span's state to be updated, not just for bytes.
const untilSettled = -1

// ready reports whether a read needing data[:need] may be answered now,
// and with what: a reference to the buffer, which the caller releases.
// unverified allows answering before the digest matched; early tells that
// it did. A wait untilSettled gets no buffer.
func (f *flight) ready(need int64, unverified bool) (buf *spanBuf, early bool, ok bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, false, true, f.err
	}
	if need == untilSettled {
		return nil, false, f.phase.settled(), nil
	}
	if f.buf != nil && f.servableLocked(need, unverified) {
		early = !f.phase.verified()
		if early {
			f.served = max(f.served, need)
		}
		return f.buf.retain(), early, true, nil
	}
	return nil, false, false, nil
}

// watch returns a channel closed once a wait for data[:need] (see ready)
// may be answered, or the flight's state changed.
func (f *flight) watch(need int64, unverified bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if need == untilSettled {
		need = math.MaxInt64
	}
	f.wake.watched = true
	f.wake.wantNeed = min(f.wake.wantNeed, need)
	f.wake.wantAny = f.wake.wantAny || unverified
	if need > f.inflate.produced {
		f.arrived.Broadcast() // awaitPrefix: a reader needs more than the prefix
	}
	return f.wake.changed
}

// fetchSpan waits for span id to be verified, wholly inflated and settled
// (state updated, cached), joining a flight in progress or starting one.
func (m *Manager) fetchSpan(ctx context.Context, id ztoc.SpanID, reason string) error {
	_, err := m.waitSpan(ctx, id, untilSettled, false, reason)
	return err
}

// waitSpan returns a reference to the flight's buffer for span id once
// data[:need] may be served (see flight.ready); the caller releases it.
func (m *Manager) waitSpan(ctx context.Context, id ztoc.SpanID, need int64, unverified bool, reason string) (*spanBuf, error) {
	return m.waitFlight(ctx, m.joinFlight(id, reason, need), need, unverified)
}

// waitFlight waits on f, which the caller joined, as waitSpan does, and
// leaves it.
func (m *Manager) waitFlight(ctx context.Context, f *flight, need int64, unverified bool) (*spanBuf, error) {
	answer := func(buf *spanBuf, early bool, err error) (*spanBuf, error) {
		m.leaveFlight(f, false)
		if early {
			m.metrics.UnverifiedReads.Inc()
		}
		return buf, err
	}
	for {
		if buf, early, ok, err := f.ready(need, unverified); ok {
			return answer(buf, early, err)
		}
		ch := f.watch(need, unverified)
		// Progress may have happened between ready and watch.
		if buf, early, ok, err := f.ready(need, unverified); ok {
			return answer(buf, early, err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			m.leaveFlight(f, true)
			return nil, fmt.Errorf("span %d: %w", f.span.ID, context.Cause(ctx))
		}
	}
}

// joinFlight returns span id's flight, starting one if there is none, and
// counts the caller as a waiter.
func (m *Manager) joinFlight(id ztoc.SpanID, reason string, need int64) *flight {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.startFlightLocked(id, reason, max(need, 0), false)
	f.waiters++
	return f
}

// joinDemand is joinFlight for a demand read of data[:need], except that it
// returns no flight, only the state, when span id failed, or is verified
// (the cache holds it) and the caller did not find it missing there
// (refetch). The state is looked at in the same hold of m.mu as the flight
// is joined: looked at apart, a flight could settle in between (state
// verified, flight gone) and the reader would start a second fetch of a
// span just fetched.
func (m *Manager) joinDemand(id ztoc.SpanID, need int64, refetch bool) (*flight, spanState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[id]
	if st == stateFailed || (st == stateVerified && !refetch) {
		return nil, st
	}
	f := m.startFlightLocked(id, ReasonDemand, max(need, 0), false)
	f.waiters++
	return f, st
}

// readSpan fills dst with span id's bytes from offset off within the span:
// from memory, the cache, or a flight.
func (m *Manager) readSpan(ctx context.Context, id ztoc.SpanID, dst []byte, off int64) error {
	need := off + int64(len(dst))
	for refetch := false; ; refetch = true {
		if m.hot.read(id, dst, off) {
			return nil
		}
		f, st := m.joinDemand(id, need, refetch)
		if st == stateFailed {
			return m.Failed()
		}
		if f == nil { // verified
			if m.readCached(id, dst, off) {
				return nil
			}
			m.metrics.CacheMisses.Inc()
			continue // fetched again, once
		}
		buf, err := m.waitFlight(ctx, f, need, m.opts.Verify == VerifyDeferred)
		if err != nil {
			return err
		}
		copy(dst, buf.b[off:need])
		buf.release()
		return nil
	}
}

// startFlightLocked returns span id's flight, starting one if needed; the
// caller holds m.mu. keep marks a flight no reader may cancel.
func (m *Manager) startFlightLocked(id ztoc.SpanID, reason string, need int64, keep bool) *flight {
	if f := m.flights[id]; f != nil {
		f.keep = f.keep || keep
		return f
	}
	fctx, cancel := context.WithCancel(m.ctx)
	f := newFlight(m.spans[id], reason, cancel)
	f.firstNeed, f.keep = need, keep
	m.flights[id] = f
	m.streaming++
	m.wg.Add(1)
	go m.runFlight(fctx, id, f)
	return f
}

func (m *Manager) leaveFlight(f *flight, abandoned bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	f.mu.Lock()
	served, settled := f.served, f.phase.settled()
	f.mu.Unlock()
	if settled {
		m.dropFlightBufLocked(f)
	} else if abandoned && !f.keep && served == 0 {
		f.cancel()
		// A reader arriving now must start a fresh flight, not join one
		// that is ending with "context canceled": an open the kernel
		// restarted after a signal (Go's preemption sends them) comes
		// back at once and would otherwise fail with EIO.
		if m.flights[f.span.ID] == f {
			delete(m.flights, f.span.ID)
		}
	}
}

// dropFlightBufLocked drops the flight's own reference to its buffer, once:
// the caller holds m.mu and has seen the flight settled with no waiter
// left, so no one can take a new reference through it.
func (m *Manager) dropFlightBufLocked(f *flight) {
	if !f.bufDropped && f.buf != nil {
		f.buf.release()
	}
	f.bufDropped = true
}

// runFlight fetches, verifies and inflates one span, caches it, then
// settles its state and wakes the waiters.
func (m *Manager) runFlight(ctx context.Context, id ztoc.SpanID, f *flight) {
	defer m.wg.Done()
	defer f.cancel()
	// A foreground transfer (a read's, or fetch-ahead for one) holds a
	// full-speed completion back from its start to its end (fullspeed.go).
	transferred := func() {}
	if f.reason != ReasonBackground {
		transferred = m.noteDemand()
	}
	err := m.acquire(ctx)
	if err == nil {
		err = m.streamSpan(ctx, f)
		transferred()
		f.mu.Lock()
		comp := f.comp // the hasher and inflater are done with it
		f.comp = nil
		f.mu.Unlock()
		if err == nil {
			// Before the slot is released, so the memory bound holds.
			m.keepCompressed(id, comp) // for a full-speed pass (fullspeed.go)
		}
		if f.span.Checkpoint != nil {
			m.bufs.p.put(comp)
		}
		<-m.sem
	}
	transferred() // if acquire failed
	// From here on the flight only writes the cache: it no longer holds
	// back fetch-ahead (startFlights).
	m.mu.Lock()
	m.streaming--
	m.mu.Unlock()
	if err == nil {
		m.hot.add(id, f.buf)
		if perr := m.cache.Put(m.cacheKey(id), f.data); perr != nil {
			// Not fatal: the bytes are served from memory now and
			// fetched again on a later miss.
			log.G(ctx).WithError(perr).WithField("layer", m.opts.LayerDigest).Warn("span cache write failed")
		}
	}
	err = m.settle(ctx, id, f, err)
	f.mu.Lock()
	if err == nil {
		f.advanceLocked(phaseDone)
	} else {
		f.err = err
		f.advanceLocked(phaseFailed)
	}
	f.notifyLocked(true)
	f.mu.Unlock()
	m.mu.Lock()
	if f.waiters == 0 {
		m.dropFlightBufLocked(f)
	}
	m.mu.Unlock()
}

// acquire takes a fetch slot, bounding the flights that hold buffers.
func (m *Manager) acquire(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for a fetch slot: %w", context.Cause(ctx))
	}
}

// streamSpan runs the transfer and the inflater of f side by side and
// classifies the outcome.
func (m *Manager) streamSpan(ctx context.Context, f *flight) error {
	s := f.span
	// Sizes are bounded by MaxSpanBytes in New.
	buf := newSpanBuf(&m.bufs.p, s.UncompressedSize())
	comp := buf.b // a tar layer: the span is its own bytes
	if s.Checkpoint != nil {
		comp = m.bufs.p.get(s.CompressedSize())
	}
	f.mu.Lock()
	f.comp, f.data, f.buf = comp, buf.b, buf
	f.mu.Unlock()
	var ierr error
	var wg sync.WaitGroup
	if s.Checkpoint != nil {
		wg.Go(func() {
			ierr = m.inflateInto(f)
			f.mu.Lock()
			f.inflate.ended = true
			f.arrived.Broadcast() // awaitPrefix
			f.mu.Unlock()
		})
	}
	ferr := m.fetchInto(ctx, f)
	wg.Wait()
	switch {
	case ferr != nil:
		return fmt.Errorf("fetch span %d: %w", s.ID, ferr)
	case ierr != nil:
		// The bytes matched the digest, so the zTOC itself is inconsistent
		// (wrong checkpoint or sizes): a verification failure too.
		return fmt.Errorf("span %d verified but does not inflate: %v: %w", s.ID, ierr, ztoc.ErrSpanDigest)
	}
	return nil
}

// servedPrefix records unverified bytes served from a span whose flight
// then failed (a network error) before its digest could be checked: the
// next verified fetch of the span must reproduce them.
type servedPrefix struct {
	end int64
	sum [sha256.Size]byte
}

func (p servedPrefix) matches(data []byte) bool {
	return int64(len(data)) >= p.end && sha256.Sum256(data[:p.end]) == p.sum
}

// settle updates span id's state after its flight and returns the error
// the waiters get.
func (m *Manager) settle(ctx context.Context, id ztoc.SpanID, f *flight, err error) error {
	f.mu.Lock()
	served := f.served
	f.sealLocked() // what was served is now fixed: it is recorded below
	f.mu.Unlock()
	m.mu.Lock()
	if m.flights[id] == f { // an abandoned flight was already replaced
		delete(m.flights, id)
	}
	prev, hadPrev := m.partials[id]
	switch {
	case err == nil && hadPrev && !prev.matches(f.data):
		delete(m.partials, id)
		m.setState(id, stateFailed)
		m.mu.Unlock()
		m.hot.drop(id)
		return m.fail(ctx, KindPrefix, fmt.Errorf("span %d: the %d bytes served before verification differ from the verified span", id, prev.end))
	case err == nil:
		delete(m.partials, id)
		m.setState(id, stateVerified)
		m.mu.Unlock()
		return nil
	case errors.Is(err, ztoc.ErrSpanDigest):
		m.setState(id, stateFailed)
		m.mu.Unlock()
		if served > 0 {
			err = fmt.Errorf("%w (%d bytes of it were served before verification)", err, served)
		}
		return m.fail(ctx, KindSpanDigest, err)
	}
	defer m.mu.Unlock()
	m.metrics.FetchErrors.Inc()
	if served == 0 || (hadPrev && prev.end >= served) {
		return err
	}
	if f.data == nil || int64(len(f.data)) < served {
		return err
	}
	p := servedPrefix{end: served, sum: sha256.Sum256(f.data[:served])}
	if hadPrev && !prev.matches(f.data) {
		m.setState(id, stateFailed)
		return m.fail(ctx, KindPrefix, fmt.Errorf("span %d: two unverified reads of it differ", id))
	}
	m.partials[id] = p
	if m.state[id] == stateEmpty {
		m.setState(id, statePartial)
	}
	return err
}
