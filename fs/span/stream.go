package span

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/gzipx"
)

// readPiece is how many compressed bytes are received at most before they
// are handed to the inflater and the hasher, so both keep pace with the
// transfer.
const readPiece = 64 << 10

// inflateStep is how many bytes the inflater is asked for at a time, so
// progress is published to waiting readers at least that often.
const inflateStep = 32 << 10

// prefixSlack is added to the estimated compressed size (plus an eighth)
// of the part a deferred-mode read needs: deflate emits a block's bytes
// only after its header and tables, and the estimate assumes the span
// compresses evenly. Erring short costs the reader one more round trip (the
// second request starts as soon as the inflater runs dry with a reader
// waiting); erring long costs transfer before the answer.
const prefixSlack = 16 << 10

// restDelay is how long a deferred-mode flight waits, once the read that
// started it can be answered, before it asks for the rest of the span
// (unless a reader needs more of it first). Started at once, that transfer
// raced the answer: on loopback a hundred KiB or more arrived before the
// caller got its bytes, competing for the link and the CPU. The delay
// postpones the span's verification by as much; the flight still verifies
// it even if every reader has gone.
const restDelay = 20 * time.Millisecond

// fetchInto streams f's compressed bytes into f.comp, hashing them as they
// arrive, and checks the span digest at the end. The transfer ending early
// or the digest not matching is published to the inflater and returned.
func (m *Manager) fetchInto(ctx context.Context, f *flight) error {
	s := f.span
	h := sha256.New()
	var pos int64
	plan := m.requestPlan(f)
	for i, end := range plan {
		reason := f.reason
		if i == 0 && len(plan) > 1 {
			reason = ReasonPrefix
		}
		if i == 1 {
			f.awaitPrefix()
		}
		if err := m.fetchPart(ctx, f, h, &pos, end, reason); err != nil {
			f.endFetch(err)
			return err
		}
	}
	got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if got != s.Digest {
		err := fmt.Errorf("span %d: sha256 %s, want %s: %w", s.ID, got.Encoded(), s.Digest, ztoc.ErrSpanDigest)
		f.endFetch(err)
		return err
	}
	// Counted before readers are released, so the counter never lags what
	// they saw.
	m.metrics.SpansFetched.WithLabelValues(f.reason).Inc()
	f.endFetch(nil)
	return nil
}

// requestPlan returns the ends (offsets within the span) of the range
// requests that fetch f. A strict flight, or one nobody asked a prefix of,
// is one request: one round trip. A deferred-mode flight started by a read
// of the span's start asks first for about what that read needs, then for
// the rest, so the read is answered after a small transfer.
func (m *Manager) requestPlan(f *flight) []int64 {
	s := f.span
	size := s.CompressedSize()
	if m.opts.Verify != VerifyDeferred || f.firstNeed <= 0 || f.firstNeed >= s.UncompressedSize() {
		return []int64{size}
	}
	ratio := float64(size) / float64(max(s.UncompressedSize(), 1))
	est := int64(float64(f.firstNeed) * ratio)
	first := est + est/8 + prefixSlack
	if first >= size*3/4 {
		return []int64{size}
	}
	return []int64{first, size}
}

// fetchPart receives the span bytes [*pos, end) in one range request.
func (m *Manager) fetchPart(ctx context.Context, f *flight, h hash.Hash, pos *int64, end int64, reason string) error {
	s := f.span
	rc, err := m.blob.FetchRange(ctx, s.CompressedStart+*pos, s.CompressedStart+end)
	if err != nil {
		return err
	}
	defer rc.Close()
	counter := m.metrics.BytesFetched.WithLabelValues(reason)
	for *pos < end {
		n, err := rc.Read(f.comp[*pos:min(end, *pos+readPiece)])
		if n > 0 {
			piece := f.comp[*pos : *pos+int64(n)]
			*pos += int64(n)
			f.arrive(*pos) // the inflater starts on it while it is hashed
			h.Write(piece)
			counter.Add(float64(n))
		}
		switch {
		case err == io.EOF && *pos < end:
			return fmt.Errorf("range of span %d ended %d bytes early: %w", s.ID, end-*pos, io.ErrUnexpectedEOF)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return nil
}

// awaitPrefix holds back the request for the rest of a deferred-mode span
// until the read that started the flight can be answered (or the inflater
// needs more bytes than the prefix had, or stopped), and then for restDelay
// more unless a reader waits for bytes the prefix does not hold, so that
// the answer is not slowed by a transfer competing with it for the link
// and the CPU.
func (f *flight) awaitPrefix() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.inflate.produced < f.firstNeed && !f.inflaterStarvedLocked() && !f.inflate.ended {
		f.arrived.Wait()
	}
	if f.inflate.ended {
		return
	}
	deadline := time.Now().Add(restDelay)
	timer := time.AfterFunc(restDelay, func() {
		f.mu.Lock()
		f.arrived.Broadcast()
		f.mu.Unlock()
	})
	defer timer.Stop()
	// A reader is waiting for more once it watches for bytes past what was
	// produced, and the inflater has used up the prefix.
	for time.Now().Before(deadline) && !f.inflate.ended &&
		!(f.inflaterStarvedLocked() && f.readerWantsMoreLocked()) {
		f.arrived.Wait()
	}
}

// arrive publishes that comp[:pos] has been received.
func (f *flight) arrive(pos int64) {
	f.mu.Lock()
	f.xfer.have = pos
	woke := false
	if f.span.Checkpoint == nil {
		f.inflate.produced = pos
		woke = f.notifyLocked(false)
	}
	f.arrived.Broadcast()
	f.mu.Unlock()
	yieldTo(woke)
}

// endFetch publishes the end of the transfer: err, or every byte received
// and the digest matched.
func (f *flight) endFetch(err error) {
	f.mu.Lock()
	switch {
	case err == nil:
		f.advanceLocked(phaseVerified)
	case errors.Is(err, ztoc.ErrSpanDigest):
		f.xfer.end = err
		f.advanceLocked(phaseTampered)
	default:
		f.xfer.end = err
		f.advanceLocked(phaseBroken)
	}
	f.arrived.Broadcast()
	woke := f.notifyLocked(true)
	f.mu.Unlock()
	yieldTo(woke)
}

// produce publishes that data[:pos] has been inflated.
func (f *flight) produce(pos int64) {
	f.mu.Lock()
	f.inflate.produced = pos
	woke := f.notifyLocked(false)
	f.arrived.Broadcast() // awaitPrefix
	f.mu.Unlock()
	yieldTo(woke)
}

// inflateInto inflates f's compressed bytes into f.data while they arrive.
// Its input is unverified until the transfer ends: the inflater is bounded
// (output by the span size, memory by its window) and fuzzed, and nothing
// it produces leaves the flight before the digest matched except in
// deferred mode.
func (m *Manager) inflateInto(f *flight) error {
	s := f.span
	n := int64(len(f.data))
	if n > ztoc.MaxDeflateRatio*s.CompressedSize() {
		return fmt.Errorf("%d compressed bytes cannot hold %d: %w", s.CompressedSize(), n, ztoc.ErrInvalid)
	}
	r, err := gzipx.NewResumeReader(&arrivingReader{f: f}, s.Checkpoint.Bits, s.Checkpoint.Window)
	if err != nil {
		return err
	}
	var pos int64
	for pos < n {
		// Small steps: the inflater returns only once it has produced what
		// was asked for, and a reader may be waiting for the first bytes.
		k, err := r.Read(f.data[pos:min(n, pos+inflateStep)])
		if k > 0 {
			pos += int64(k)
			f.produce(pos)
		}
		if err != nil && pos < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("inflate: %d of %d bytes: %w", pos, n, err)
		}
	}
	return nil
}

// arrivingReader reads a flight's compressed bytes as they arrive,
// blocking until more are received or the transfer ends.
type arrivingReader struct {
	f   *flight
	pos int64
}

func (r *arrivingReader) Read(p []byte) (int, error) {
	f := r.f
	f.mu.Lock()
	for f.xfer.have <= r.pos && f.phase == phaseFetching {
		f.inflate.inWait, f.inflate.waitAt = true, r.pos
		f.arrived.Broadcast() // awaitPrefix: the bytes received are used up
		f.arrived.Wait()
	}
	f.inflate.inWait = false
	have, ferr, tampered := f.xfer.have, f.xfer.end, f.phase == phaseTampered
	f.mu.Unlock()
	switch {
	case tampered:
		return 0, ferr // inflating known-bad bytes is moot
	case have > r.pos:
		// After a broken transfer, what did arrive is still inflated: a
		// deferred-mode reader may be waiting for it.
		n := copy(p, f.comp[r.pos:have])
		r.pos += int64(n)
		return n, nil
	case ferr != nil:
		return 0, ferr
	}
	return 0, io.EOF
}
