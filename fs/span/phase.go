package span

import (
	"fmt"
	"math"
)

// flightPhase is where a flight is in its life. The changes allowed are
// listed in phaseTransitions; anything else is a bug and panics in
// flight.advanceLocked, because it would mean serving bytes (or keeping
// them back) against what the table says.
//
//	fetching ─┬─> verified ──────────────┬─> done
//	          ├─> tampered ─┐            └─> failed
//	          ├─> broken ───┼─> sealed ────> failed
//	          └─────────────┘
type flightPhase uint8

const (
	// phaseFetching: waiting for a fetch slot, or the transfer runs.
	// Unverified bytes may be served (deferred mode).
	phaseFetching flightPhase = iota
	// phaseVerified: every compressed byte arrived and matched the span
	// digest. Only this and phaseDone serve verified bytes.
	phaseVerified
	// phaseTampered: the digest did not match; nothing more may be served.
	phaseTampered
	// phaseBroken: the transfer ended early (network, cancelled). What did
	// arrive is still inflated and may still be served unverified.
	phaseBroken
	// phaseSealed: an unverified flight is settling; what it served is
	// being recorded, so no more unverified bytes may be served. A verified
	// flight is never sealed: it serves only verified bytes anyway.
	phaseSealed
	// phaseDone: settled, the span is verified and its state updated.
	phaseDone
	// phaseFailed: settled with an error, which is final (flight.err).
	phaseFailed
)

var phaseNames = [...]string{"fetching", "verified", "tampered", "broken", "sealed", "done", "failed"}

func (p flightPhase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// phaseTransitions is the explicit table of allowed phase changes; who
// makes each is noted.
var phaseTransitions = map[flightPhase][]flightPhase{
	// endFetch (the fetcher); sealed directly when no slot was had.
	phaseFetching: {phaseVerified, phaseTampered, phaseBroken, phaseSealed},
	// runFlight, once settled; failed when the verified bytes do not
	// inflate or differ from a prefix served before.
	phaseVerified: {phaseDone, phaseFailed},
	phaseTampered: {phaseSealed}, // settle
	phaseBroken:   {phaseSealed}, // settle
	phaseSealed:   {phaseFailed}, // runFlight: an unverified flight always fails
	phaseDone:     {},
	phaseFailed:   {},
}

func canAdvance(from, to flightPhase) bool {
	for _, p := range phaseTransitions[from] {
		if p == to {
			return true
		}
	}
	return false
}

// verified reports whether the span's digest matched: verified bytes may
// be served to anyone.
func (p flightPhase) verified() bool { return p == phaseVerified || p == phaseDone }

// settled reports whether the flight ended and the span's state was
// updated.
func (p flightPhase) settled() bool { return p == phaseDone || p == phaseFailed }

// serves reports whether the bytes produced may be handed to a reader
// now; unverified tells that the reader takes bytes whose digest was not
// checked yet (deferred mode).
func (p flightPhase) serves(unverified bool) bool {
	return p.verified() || (unverified && (p == phaseFetching || p == phaseBroken))
}

// transfer is the fetcher's side of a flight's progress: written by
// fetchInto (through arrive and endFetch), read by the inflater,
// awaitPrefix and readers. Guarded by flight.mu. How the transfer ended is
// the flight's phase (verified, tampered or broken).
type transfer struct {
	have int64 // compressed bytes received and hashed: comp[:have]
	end  error // why the transfer ended early (phase broken or tampered)
}

// inflation is the inflater's side of a flight's progress: written by
// inflateInto and its arrivingReader (for a tar layer, produced is written
// by the fetcher: the span is its own bytes), read by awaitPrefix and
// readers. Guarded by flight.mu.
type inflation struct {
	produced int64 // uncompressed bytes inflated: data[:produced]
	inWait   bool  // the inflater waits for compressed bytes...
	waitAt   int64 // ...having used comp[:waitAt]
	ended    bool  // the inflater stopped (done or failed)
}

// wakeup is what readers waiting on a flight asked to be woken for;
// guarded by flight.mu. changed is closed and replaced to wake them.
type wakeup struct {
	changed  chan struct{}
	watched  bool  // someone waits on changed
	wantNeed int64 // the least need of those waiting (math.MaxInt64: none counts bytes)
	wantAny  bool  // one of them takes unverified bytes
}

func newWakeup() wakeup { return wakeup{changed: make(chan struct{}), wantNeed: math.MaxInt64} }

// advanceLocked moves f to phase to; the caller holds f.mu.
func (f *flight) advanceLocked(to flightPhase) {
	if !canAdvance(f.phase, to) {
		panic(fmt.Sprintf("flight of span %d: illegal phase change %v → %v", f.span.ID, f.phase, to))
	}
	f.phase = to
}

// servableLocked reports whether a read of data[:need] may be answered
// now (unverified: see flightPhase.serves); the caller holds f.mu.
func (f *flight) servableLocked(need int64, unverified bool) bool {
	return f.inflate.produced >= need && f.phase.serves(unverified)
}

// inflaterStarvedLocked reports whether the inflater waits for bytes and
// has used every byte received (inWait alone could be left from before the
// last piece arrived); the caller holds f.mu.
func (f *flight) inflaterStarvedLocked() bool {
	return f.inflate.inWait && f.inflate.waitAt >= f.xfer.have
}

// readerWantsMoreLocked reports whether a reader waits for bytes past
// those inflated so far; the caller holds f.mu.
func (f *flight) readerWantsMoreLocked() bool {
	return f.wake.watched && f.wake.wantNeed > f.inflate.produced
}

// sealLocked fixes what the flight served, before settle records it: an
// unverified flight serves nothing more. A verified one stays as it is,
// since it serves only verified bytes. The caller holds f.mu.
func (f *flight) sealLocked() {
	if f.phase != phaseVerified {
		f.advanceLocked(phaseSealed)
	}
}
