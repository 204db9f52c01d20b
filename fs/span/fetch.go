package span

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/log"

	"github.com/ociseek/ociseek/ztoc"
)

// flight is one fetch of a whole span shared by every reader that needs the
// span meanwhile. Its context is cancelled when the last waiter leaves, so
// an interrupted read stops the transfer unless others still want it.
type flight struct {
	done    chan struct{} // closed when data/err are set
	data    []byte        // verified uncompressed span
	err     error
	waiters int // guarded by Manager.mu
	cancel  context.CancelFunc
}

// fetchSpan returns span id's verified uncompressed bytes, joining a fetch
// in progress or starting one.
func (m *Manager) fetchSpan(ctx context.Context, id ztoc.SpanID, reason string) ([]byte, error) {
	f := m.joinFlight(id, reason)
	select {
	case <-f.done:
		m.leaveFlight(f, false)
		return f.data, f.err
	case <-ctx.Done():
		m.leaveFlight(f, true)
		return nil, fmt.Errorf("span %d: %w", id, context.Cause(ctx))
	}
}

func (m *Manager) joinFlight(id ztoc.SpanID, reason string) *flight {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flights[id]
	if f == nil {
		fctx, cancel := context.WithCancel(m.ctx)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		m.flights[id] = f
		m.wg.Add(1)
		go m.runFlight(fctx, id, f, reason)
	}
	f.waiters++
	return f
}

func (m *Manager) leaveFlight(f *flight, abandoned bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f.waiters--
	if abandoned && f.waiters == 0 {
		f.cancel()
	}
}

// runFlight fetches, verifies, inflates and caches one span, then settles
// its state and wakes the waiters.
func (m *Manager) runFlight(ctx context.Context, id ztoc.SpanID, f *flight, reason string) {
	defer m.wg.Done()
	defer f.cancel()
	data, err := m.fetchWhole(ctx, id, reason)
	if err == nil {
		if perr := m.cache.Put(m.cacheKey(id), data); perr != nil {
			// Not fatal: the bytes are served from this flight and fetched
			// again on the next miss.
			log.G(ctx).WithError(perr).WithField("layer", m.opts.LayerDigest).Warn("span cache write failed")
		}
	}
	m.mu.Lock()
	delete(m.flights, id)
	prefix := m.partials[id]
	delete(m.partials, id)
	switch {
	case err == nil && prefix != nil && !bytes.Equal(prefix, data[:len(prefix)]):
		err = fmt.Errorf("span %d: the %d bytes served before verification differ from the verified span", id, len(prefix))
		m.setState(id, stateFailed)
		m.mu.Unlock()
		err = m.fail(ctx, KindPrefix, err)
	case err == nil:
		m.setState(id, stateVerified)
		m.mu.Unlock()
	case errors.Is(err, ztoc.ErrSpanDigest):
		m.setState(id, stateFailed)
		m.mu.Unlock()
		err = m.fail(ctx, KindSpanDigest, err)
	default:
		if prefix != nil {
			m.partials[id] = prefix // keep it for the next attempt to check
		}
		m.mu.Unlock()
		m.metrics.FetchErrors.Inc()
	}
	f.data, f.err = data, err
	close(f.done)
}

// fetchWhole reads span id's compressed bytes, checks their digest and
// inflates them.
func (m *Manager) fetchWhole(ctx context.Context, id ztoc.SpanID, reason string) ([]byte, error) {
	select {
	case m.sem <- struct{}{}:
		defer func() { <-m.sem }()
	case <-ctx.Done():
		return nil, fmt.Errorf("span %d: %w", id, context.Cause(ctx))
	}
	s := m.spans[id]
	compressed, err := m.readCompressed(ctx, s.CompressedStart, s.CompressedEnd, reason)
	if err != nil {
		return nil, fmt.Errorf("fetch span %d: %w", id, err)
	}
	if err := ztoc.VerifySpan(s, compressed); err != nil {
		return nil, err
	}
	data, err := m.z.InflateSpan(id, compressed)
	if err != nil {
		// The bytes matched the digest, so the zTOC itself is inconsistent
		// (wrong checkpoint or sizes): a verification failure too.
		return nil, fmt.Errorf("span %d verified but does not inflate: %v: %w", id, err, ztoc.ErrSpanDigest)
	}
	m.metrics.SpansFetched.WithLabelValues(reason).Inc()
	return data, nil
}

// readCompressed reads the blob bytes [start, end) whole.
func (m *Manager) readCompressed(ctx context.Context, start, end int64, reason string) ([]byte, error) {
	rc, err := m.blob.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, end-start) // bounded by MaxSpanBytes in New
	n, err := io.ReadFull(rc, buf)
	m.metrics.BytesFetched.WithLabelValues(reason).Add(float64(n))
	if err != nil {
		return nil, fmt.Errorf("read [%d,%d): %w", start, end, err)
	}
	return buf, nil
}

// fetchAhead starts fetches of the spans after last when reads look
// sequential (this read starts where the previous one ended).
func (m *Manager) fetchAhead(off, end int64, last ztoc.SpanID) {
	m.mu.Lock()
	sequential := off == m.seqEnd && off > 0
	m.seqEnd = end
	var ids []ztoc.SpanID
	if sequential && m.opts.FetchAhead > 0 {
		for id := last + 1; id <= last+ztoc.SpanID(m.opts.FetchAhead) && int(id) < len(m.spans); id++ {
			if _, busy := m.flights[id]; !busy && m.state[id] == stateEmpty {
				ids = append(ids, id)
			}
		}
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			// Errors are left for the reader that needs the span to see.
			_, _ = m.fetchSpan(m.ctx, id, ReasonAhead)
		}()
	}
}
