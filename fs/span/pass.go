package span

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/log"

	"github.com/ociseek/ociseek/ztoc"
)

// passChunk is how many compressed bytes one completion step fetches: big
// enough that request overhead does not matter, small enough that a step
// stays short and yields to foreground reads soon.
const passChunk = 4 << 20

// errPassStopped ends a verifier whose Manager closed or whose pass is
// being restarted.
var errPassStopped = errors.New("completion pass stopped")

// FetchNext advances the background completion by one step and reports the
// compressed bytes it fetched and whether the layer needs no more steps
// (complete, or failed). fs/bgfetch drives it; calls must not overlap.
//
// Completion is one continuous pass over the blob from byte 0: its bytes
// feed the layer digest and ztoc.VerifyStream, which inflates the stream
// without ever resuming from a stored checkpoint and checks every
// checkpoint (offsets, bit position, window), span digest, gzip trailer and
// TOC entry against it. Each span's real bytes are compared with what was
// served and cached (checkSpan), or cached when they were not. Spans that
// served unverified prefixes (deferred mode) are fetched first, so that
// what was served early is settled soon. A network error leaves the pass
// where it was, to be retried; a mismatch fails the layer.
func (m *Manager) FetchNext(ctx context.Context) (fetched int64, done bool, err error) {
	if err := m.Failed(); err != nil {
		return 0, true, err
	}
	m.mu.Lock()
	if m.pass.done {
		m.mu.Unlock()
		return 0, true, nil
	}
	for id := range m.partials {
		m.mu.Unlock()
		before, _ := m.Progress()
		err := m.fetchSpan(ctx, id, ReasonBackground)
		after, _ := m.Progress()
		return max(after-before, 0), false, err
	}
	if m.pass.pipe == nil {
		m.startPassLocked()
	}
	if fs := m.full.Load(); fs != nil && m.pass.ahead == nil {
		m.pass.ahead = m.newAheadWindowLocked(fs, m.pass.fed)
	}
	p := m.pass
	m.mu.Unlock()
	return m.passStep(ctx, p)
}

// startPassLocked starts the verifier goroutine of a new pass; the caller
// holds m.mu.
func (m *Manager) startPassLocked() {
	pr, pw := io.Pipe()
	result := make(chan error, 1)
	m.pass = passState{hasher: m.opts.LayerDigest.Algorithm().Hash(), pipe: pw, result: result}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// The inflater reads 4 KiB at a time; straight from the pipe each
		// read was a hand-over between goroutines, which doubled the
		// pass's time.
		err := ztoc.VerifyStream(m.ctx, bufio.NewReaderSize(pr, passBuffer), m.z, m.checkSpan)
		if err != nil {
			pr.CloseWithError(err) // unblocks the step feeding it
		} else {
			pr.CloseWithError(errPassStopped)
		}
		result <- err
	}()
}

// stopPass ends the current pass, if any, so that the next step starts a
// new one from byte 0.
func (m *Manager) stopPass() {
	m.mu.Lock()
	pw, ahead := m.pass.pipe, m.pass.ahead
	m.pass = passState{done: m.pass.done}
	m.mu.Unlock()
	if pw != nil {
		pw.CloseWithError(errPassStopped)
	}
	if ahead != nil {
		ahead.stop()
	}
}

// passStep fetches the next chunk of the blob and feeds it to the pass;
// after the last one it collects the verdict.
func (m *Manager) passStep(ctx context.Context, p passState) (int64, bool, error) {
	size := m.z.CompressedArchiveSize
	buf, err := m.passBytes(ctx, p)
	if err != nil {
		return 0, false, fmt.Errorf("completion pass: %w", err)
	}
	end := p.fed + int64(len(buf))
	p.hasher.Write(buf)
	// feed returns once the verifier took every byte (it checks them, and
	// caches the spans they complete, at most passBuffer behind), or with
	// its error.
	if werr := m.feed(ctx, p, buf); werr != nil {
		err := m.passVerdict(ctx, p)
		if err == nil { // the verifier ended without a verdict
			err = fmt.Errorf("completion pass stopped early: %w", werr)
			m.stopPass()
		}
		return int64(len(buf)), m.Failed() != nil, err
	}
	m.mu.Lock()
	m.pass.fed = end
	m.mu.Unlock()
	if end < size {
		return int64(len(buf)), false, nil
	}
	p.pipe.Close()
	if err := m.passVerdict(ctx, p); err != nil {
		return int64(len(buf)), m.Failed() != nil, err
	}
	got := fmt.Sprintf("%s:%x", m.opts.LayerDigest.Algorithm(), p.hasher.Sum(nil))
	if got != m.opts.LayerDigest.String() {
		return int64(len(buf)), true, m.fail(ctx, KindLayerDigest, fmt.Errorf("blob digest is %s", got))
	}
	m.mu.Lock()
	m.pass = passState{done: true}
	m.kept = map[ztoc.SpanID]bool{}
	m.mu.Unlock()
	if p.ahead != nil {
		p.ahead.stop()
	}
	return int64(len(buf)), true, nil
}

// passBuffer is how far the verifier reads ahead of what it checked.
const passBuffer = 256 << 10

// passPiece is how many blob bytes a full-speed pass inflates between two
// looks at foreground transfers, so that it leaves them the CPU soon.
const passPiece = 512 << 10

// feed writes buf to the verifier of pass p. At full speed it does so a
// piece at a time, waiting for foreground transfers in between. Every byte
// is written whatever happens: a chunk fed in part would be fed again by
// the next step and break the stream.
func (m *Manager) feed(ctx context.Context, p passState, buf []byte) error {
	fs := m.full.Load()
	if fs == nil {
		_, err := p.pipe.Write(buf)
		return err
	}
	for len(buf) > 0 {
		_ = fs.wait(ctx) // returns at once when ctx ends: the rest is written anyway
		n := min(len(buf), passPiece)
		if _, err := p.pipe.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// passBytes returns the blob bytes that come next in pass p: the next
// segment fetched ahead (full speed, fullspeed.go), or one chunk fetched
// now.
func (m *Manager) passBytes(ctx context.Context, p passState) ([]byte, error) {
	if p.ahead != nil {
		return p.ahead.take(ctx, p.fed)
	}
	end := min(p.fed+passChunk, m.z.CompressedArchiveSize)
	buf, err := m.readCompressed(ctx, p.fed, end, ReasonBackground)
	if err != nil {
		return nil, fmt.Errorf("fetch blob bytes [%d,%d): %w", p.fed, end, err)
	}
	return buf, nil
}

// passVerdict waits for the verifier's outcome. A mismatch fails the
// layer; any other error (the Manager closing, a stopped pass) restarts
// the pass at the next step.
func (m *Manager) passVerdict(ctx context.Context, p passState) error {
	var err error
	select {
	case err = <-p.result:
	case <-ctx.Done():
		m.stopPass()
		return fmt.Errorf("completion pass: %w", context.Cause(ctx))
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, ztoc.ErrMismatch) || errors.Is(err, ErrLayerFailed) {
		return m.fail(ctx, KindStream, err)
	}
	m.stopPass()
	return fmt.Errorf("completion pass: %w", err)
}

// checkSpan receives span id's real bytes from the pass. Bytes served
// before (a prefix in deferred mode, or the cached span every read since
// was served from) must equal them; a span not cached yet is cached now. A
// cache that cannot take the span (disk full) only means it is fetched
// again on demand: the pass goes on.
func (m *Manager) checkSpan(id ztoc.SpanID, data []byte) error {
	m.mu.Lock()
	st := m.state[id]
	prefix, hadPrefix := m.partials[id]
	m.mu.Unlock()
	if st == stateFailed {
		return m.Failed()
	}
	if hadPrefix && !prefix.matches(data) {
		m.markSpanFailed(id)
		return fmt.Errorf("span %d: the %d bytes served before verification differ from the layer: %w", id, prefix.end, ztoc.ErrMismatch)
	}
	if st == stateVerified {
		same, cached := m.cachedEquals(id, data)
		if cached && !same {
			m.markSpanFailed(id)
			return fmt.Errorf("span %d: the bytes served from the cache differ from the layer: %w", id, ztoc.ErrMismatch)
		}
		if cached {
			return nil
		}
	}
	if err := m.cache.Put(m.cacheKey(id), data); err != nil {
		log.L.WithError(err).WithField("layer", m.opts.LayerDigest).Debug("completion pass: span not cached")
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.partials, id)
	if m.state[id] != stateFailed {
		m.setState(id, stateVerified)
		m.metrics.SpansFetched.WithLabelValues(ReasonBackground).Inc()
	}
	return nil
}

// markSpanFailed records that span id's served bytes were wrong.
func (m *Manager) markSpanFailed(id ztoc.SpanID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.partials, id)
	if m.state[id] != stateFailed {
		m.setState(id, stateFailed)
	}
	m.hot.drop(id)
}

// cachedEquals compares span id's cached bytes with data, a piece at a
// time; cached is false when the cache does not hold the whole span.
func (m *Manager) cachedEquals(id ztoc.SpanID, data []byte) (same, cached bool) {
	const piece = 256 << 10
	buf := make([]byte, min(piece, len(data)))
	for off := 0; off < len(data); off += len(buf) {
		chunk := buf[:min(len(buf), len(data)-off)]
		if !m.readCached(id, chunk, int64(off)) {
			return false, false
		}
		if !bytes.Equal(chunk, data[off:off+len(chunk)]) {
			return false, true
		}
	}
	return true, true
}
