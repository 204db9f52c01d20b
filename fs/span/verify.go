package span

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/ociseek/ociseek/ztoc"
)

// maxHeaderRegion bounds the tar header bytes read to verify one entry (a
// header with PAX records and long names is a few KiB; a hostile zTOC could
// claim gigabytes).
const maxHeaderRegion = 1 << 20

// passState is the progress of the in-order completion pass; guarded by
// Manager.mu, advanced only by FetchNext (which callers do not run
// concurrently; passMu in FetchNext enforces it).
type passState struct {
	next     ztoc.SpanID // next span to stream
	hashed   int64       // blob bytes fed to the layer hasher
	hasher   hash.Hash
	lastByte byte // the last byte hashed: a span may start one byte back
	done     bool
}

// Complete reports whether the completion pass has verified the whole
// layer.
func (m *Manager) Complete() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pass.done
}

// VerifyEntry checks, once per entry, that the tar header in front of e's
// data describes e (name, type, size, mode, owners, times, link, devices,
// xattrs). A mismatch fails the layer. fs/layer calls it on a file's first
// open.
func (m *Manager) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	if err := m.Failed(); err != nil {
		return err
	}
	if _, ok := m.checked.Load(e.UncompressedOffset); ok {
		return nil
	}
	m.hdrOnce.Do(m.loadHeaderOffsets)
	if m.hdrErr != nil {
		return m.fail(ctx, KindTarHeader, m.hdrErr)
	}
	hdr, ok := m.hdrOffsets[e.UncompressedOffset]
	if !ok {
		return fmt.Errorf("verify %q: no TOC entry has data at %d", e.Name, e.UncompressedOffset)
	}
	size := e.UncompressedOffset - hdr
	if size > maxHeaderRegion {
		return m.fail(ctx, KindTarHeader, fmt.Errorf("verify %q: header region of %d bytes: %w", e.Name, size, ztoc.ErrInvalid))
	}
	buf := make([]byte, size)
	if _, err := m.ReadAt(ctx, buf, hdr); err != nil {
		return fmt.Errorf("verify %q: read header: %w", e.Name, err)
	}
	if err := ztoc.VerifyHeader(e, buf); err != nil {
		return m.fail(ctx, KindTarHeader, err)
	}
	m.checked.Store(e.UncompressedOffset, struct{}{})
	return nil
}

func (m *Manager) loadHeaderOffsets() {
	offs, err := m.z.HeaderOffsets()
	if err != nil {
		m.hdrErr = err
		return
	}
	m.hdrOffsets = make(map[int64]int64, len(offs))
	for i, h := range offs {
		m.hdrOffsets[m.z.TOC[i].UncompressedOffset] = h
	}
}

// FetchNext advances the background completion by one step and reports the
// compressed bytes it fetched and whether the layer is now complete and
// verified. Spans served from unverified prefixes are verified first; then
// the blob is streamed in order, one span per call, feeding the layer
// digest and checking each span digest; after the last span the layer
// digest and every TOC entry are checked. A network error leaves the pass
// where it was, to be retried. fs/bgfetch drives it; calls must not
// overlap.
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
		return after - before, false, err
	}
	if m.pass.hasher == nil {
		m.pass.hasher = m.opts.LayerDigest.Algorithm().Hash()
	}
	p := m.pass
	m.mu.Unlock()
	return m.passStep(ctx, p)
}

// passStep streams the blob from where the pass stopped to the end of span
// p.next.
func (m *Manager) passStep(ctx context.Context, p passState) (int64, bool, error) {
	s := m.spans[p.next]
	buf, err := m.readCompressed(ctx, p.hashed, s.CompressedEnd, ReasonBackground)
	if err != nil {
		return 0, false, fmt.Errorf("background fetch of span %d: %w", s.ID, err)
	}
	var spanBytes []byte
	switch {
	case s.CompressedStart >= p.hashed:
		spanBytes = buf[s.CompressedStart-p.hashed:]
	case s.CompressedStart == p.hashed-1:
		spanBytes = append([]byte{p.lastByte}, buf...)
	default:
		return 0, true, m.fail(ctx, KindSpanDigest, fmt.Errorf("span %d starts at %d, before the previous span's end %d: %w",
			s.ID, s.CompressedStart, p.hashed, ztoc.ErrInvalid))
	}
	if err := ztoc.VerifySpan(s, spanBytes); err != nil {
		return int64(len(buf)), true, m.fail(ctx, KindSpanDigest, err)
	}
	if err := m.settleFromPass(ctx, s.ID, spanBytes); err != nil {
		return int64(len(buf)), true, err
	}
	p.hasher.Write(buf)
	m.mu.Lock()
	m.pass.hashed, m.pass.next = s.CompressedEnd, p.next+1
	if len(buf) > 0 {
		m.pass.lastByte = buf[len(buf)-1]
	}
	last := int(m.pass.next) == len(m.spans)
	m.mu.Unlock()
	if !last {
		return int64(len(buf)), false, nil
	}
	if err := m.finishPass(ctx, p.hasher); err != nil {
		return int64(len(buf)), true, err
	}
	return int64(len(buf)), true, nil
}

// settleFromPass caches a span the pass verified, unless it already was.
func (m *Manager) settleFromPass(ctx context.Context, id ztoc.SpanID, compressed []byte) error {
	m.mu.Lock()
	st := m.state[id]
	m.mu.Unlock()
	if st == stateVerified {
		return nil
	}
	data, err := m.z.InflateSpan(id, compressed)
	if err != nil {
		return m.fail(ctx, KindSpanDigest, fmt.Errorf("span %d verified but does not inflate: %w", id, err))
	}
	if err := m.cache.Put(m.cacheKey(id), data); err != nil {
		return fmt.Errorf("cache span %d: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if prefix, ok := m.partials[id]; ok {
		delete(m.partials, id)
		if !prefix.matches(data) {
			m.setState(id, stateFailed)
			return m.fail(ctx, KindPrefix, fmt.Errorf("span %d: served prefix differs from the verified span", id))
		}
	}
	if m.state[id] != stateVerified {
		m.setState(id, stateVerified)
	}
	m.metrics.SpansFetched.WithLabelValues(ReasonBackground).Inc()
	return nil
}

// finishPass compares the layer digest and checks every TOC entry against
// the tar, then marks the layer complete.
func (m *Manager) finishPass(ctx context.Context, h hash.Hash) error {
	got := fmt.Sprintf("%s:%x", m.opts.LayerDigest.Algorithm(), h.Sum(nil))
	if got != m.opts.LayerDigest.String() {
		return m.fail(ctx, KindLayerDigest, fmt.Errorf("blob digest is %s", got))
	}
	for i := range m.z.TOC {
		if err := m.VerifyEntry(ctx, &m.z.TOC[i]); err != nil {
			if errors.Is(err, ErrLayerFailed) {
				return err
			}
			return fmt.Errorf("check TOC entry %d: %w", i, err)
		}
	}
	m.mu.Lock()
	m.pass.done = true
	m.mu.Unlock()
	return nil
}

// readCompressed reads the blob bytes [start, end) whole.
func (m *Manager) readCompressed(ctx context.Context, start, end int64, reason string) ([]byte, error) {
	rc, err := m.blob.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, end-start) // bounded by MaxSpanBytes (plus the byte a span may share)
	n, err := io.ReadFull(rc, buf)
	m.metrics.BytesFetched.WithLabelValues(reason).Add(float64(n))
	if err != nil {
		return nil, fmt.Errorf("read [%d,%d): %w", start, end, err)
	}
	return buf, nil
}
