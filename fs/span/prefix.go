package span

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/gzipx"
)

// prefixSlack is added to twice the estimated compressed prefix: deflate
// emits a block's bytes only after its header and tables, and the estimate
// assumes the span compresses evenly. A second request costs a round trip
// (several ms against a real registry), so erring long is cheaper.
const prefixSlack = 64 << 10

// usePrefix reports whether a read of span id up to needEnd (offset within
// the span) may be answered from an unverified prefix.
func (m *Manager) usePrefix(id ztoc.SpanID, needEnd int64) bool {
	s := m.spans[id]
	if m.opts.Verify != VerifyDeferred || s.Checkpoint == nil {
		return false
	}
	limit := m.opts.PrefixMax
	if limit <= 0 {
		limit = s.UncompressedSize() / 4
	}
	return needEnd <= limit
}

// readPrefix answers a read of the start of span id by fetching and
// inflating only a prefix of its compressed bytes. The bytes are served
// unverified and remembered, to be compared with the span once it is fetched
// whole. If the prefix cannot be inflated (which tampered bytes may cause)
// the read falls back to a whole, verified fetch.
func (m *Manager) readPrefix(ctx context.Context, id ztoc.SpanID, dst []byte, off int64) error {
	s := m.spans[id]
	need := off + int64(len(dst))
	ratio := float64(s.CompressedSize()) / float64(s.UncompressedSize())
	src := &prefixSource{m: m, ctx: ctx, pos: s.CompressedStart, end: s.CompressedEnd,
		chunk: 2*int64(float64(need)*ratio) + prefixSlack}
	defer src.close()
	out, err := inflatePrefix(src, s, need)
	m.metrics.BytesFetched.WithLabelValues(ReasonPrefix).Add(float64(src.fetched))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("span %d prefix: %w", id, context.Cause(ctx))
		}
		data, ferr := m.fetchSpan(ctx, id, ReasonDemand)
		if ferr != nil {
			return ferr
		}
		copy(dst, data[off:])
		return nil
	}
	m.metrics.SpansFetched.WithLabelValues(ReasonPrefix).Inc()
	if err := m.notePrefix(ctx, id, out); err != nil {
		return err
	}
	copy(dst, out[off:])
	return nil
}

func inflatePrefix(src io.Reader, s ztoc.Span, need int64) ([]byte, error) {
	r, err := gzipx.NewResumeReader(src, s.Checkpoint.Bits, s.Checkpoint.Window)
	if err != nil {
		return nil, err
	}
	out := make([]byte, need)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, err
	}
	return out, nil
}

// notePrefix records a served prefix. Two prefixes of one span that
// disagree prove tampering (both cannot match the digest).
func (m *Manager) notePrefix(ctx context.Context, id ztoc.SpanID, out []byte) error {
	m.mu.Lock()
	switch m.state[id] {
	case stateEmpty:
		m.partials[id] = out
		m.setState(id, statePartial)
	case statePartial:
		old := m.partials[id]
		n := min(len(old), len(out))
		if !bytes.Equal(old[:n], out[:n]) {
			m.setState(id, stateFailed)
			m.mu.Unlock()
			return m.fail(ctx, KindPrefix, fmt.Errorf("span %d: two fetches of its prefix differ", id))
		}
		if len(out) > len(old) {
			m.partials[id] = out
		}
	}
	// Verified meanwhile: the flight that verified it had no record of
	// this prefix, so check it here.
	if m.state[id] == stateVerified {
		m.mu.Unlock()
		data, err := m.fetchSpanIfNeeded(ctx, id)
		if err != nil {
			return err
		}
		if !bytes.Equal(data[:len(out)], out) {
			return m.fail(ctx, KindPrefix, fmt.Errorf("span %d: served prefix differs from the verified span", id))
		}
		return nil
	}
	m.mu.Unlock()
	return nil
}

// fetchSpanIfNeeded reads a verified span from the cache, or fetches it.
func (m *Manager) fetchSpanIfNeeded(ctx context.Context, id ztoc.SpanID) ([]byte, error) {
	data := make([]byte, m.spans[id].UncompressedSize())
	if n, err := m.cache.ReadAt(m.cacheKey(id), data, 0); n == len(data) && (err == nil || errors.Is(err, io.EOF)) {
		return data, nil
	}
	return m.fetchSpan(ctx, id, ReasonDemand)
}

// prefixSource feeds compressed bytes from span start onwards, in range
// requests that double in size, so a prefix read transfers little more than
// it inflates. ctx is the reading call's context (io.Reader has no context
// parameter; the source lives only for that call).
type prefixSource struct {
	m       *Manager
	ctx     context.Context
	pos     int64 // next byte
	end     int64 // span end
	chunk   int64 // size of the next request
	body    io.ReadCloser
	bodyEnd int64
	fetched int64
}

func (s *prefixSource) Read(p []byte) (int, error) {
	for {
		if s.body == nil {
			if s.pos >= s.end {
				return 0, io.EOF
			}
			e := min(s.end, s.pos+s.chunk)
			s.chunk *= 2
			rc, err := s.m.blob.FetchRange(s.ctx, s.pos, e)
			if err != nil {
				return 0, err
			}
			s.body, s.bodyEnd = rc, e
		}
		n, err := s.body.Read(p)
		s.pos += int64(n)
		s.fetched += int64(n)
		if err == io.EOF || s.pos >= s.bodyEnd {
			if s.pos < s.bodyEnd {
				return n, io.ErrUnexpectedEOF
			}
			s.close()
			if n == 0 {
				continue
			}
			return n, nil
		}
		return n, err
	}
}

func (s *prefixSource) close() {
	if s.body != nil {
		s.body.Close()
		s.body = nil
	}
}
