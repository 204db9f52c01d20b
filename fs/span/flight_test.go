package span

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/ztoc"
)

// gatedBlob holds back the blob's bytes from gateAt on: reads of them wait
// until open is closed, or fail with the error in fail when one is set. It
// also tracks how many range streams are open at once.
type gatedBlob struct {
	BlobReader
	gateAt  int64
	open    chan struct{}
	fail    atomic.Pointer[error]
	streams atomic.Int64
	maxOpen atomic.Int64
}

func newGatedBlob(r BlobReader, gateAt int64) *gatedBlob {
	return &gatedBlob{BlobReader: r, gateAt: gateAt, open: make(chan struct{})}
}

func (g *gatedBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	rc, err := g.BlobReader.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	n := g.streams.Add(1)
	for old := g.maxOpen.Load(); n > old && !g.maxOpen.CompareAndSwap(old, n); old = g.maxOpen.Load() {
	}
	return &gatedBody{ReadCloser: rc, g: g, ctx: ctx, pos: start}, nil
}

type gatedBody struct {
	io.ReadCloser
	g      *gatedBlob
	ctx    context.Context
	pos    int64
	closed bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.pos >= b.g.gateAt {
		if errp := b.g.fail.Load(); errp != nil {
			return 0, *errp
		}
		select {
		case <-b.g.open:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	} else if rest := b.g.gateAt - b.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.ReadCloser.Read(p)
	b.pos += int64(n)
	return n, err
}

func (b *gatedBody) Close() error {
	if !b.closed {
		b.closed = true
		b.g.streams.Add(-1)
	}
	return b.ReadCloser.Close()
}

// tarBytes returns the uncompressed tar of e's layer.
func tarBytes(t *testing.T, e *env) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(e.layer))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (m *Manager) stateOf(id ztoc.SpanID) spanState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state[id]
}

// waitState polls until span id reaches want, failing after a bound.
func waitState(t *testing.T, m *Manager, id ztoc.SpanID, want spanState) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m.stateOf(id) == want {
			return
		}
	}
	t.Fatalf("span %d is %v, want %v", id, m.stateOf(id), want)
}

// TestStrictWaitsForDigest: while the last byte of a span is held back, a
// strict read of the span's start is not answered (its bytes are inflated
// but unverified); a deferred read is answered with the right bytes, and
// its flight verifies and caches the span once the byte arrives, after the
// reader has gone.
func TestStrictWaitsForDigest(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	tar := tarBytes(t, e)
	id := e.z.SpanOf(e.entry(t, "big/one").UncompressedOffset + 300_000)
	s, _ := e.z.Span(id)
	gb := newGatedBlob(e.blob, s.CompressedEnd-1)
	p := make([]byte, 512)

	strict, err := New(e.z, gb, e.cache, Options{LayerDigest: e.dgst, FetchAhead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := strict.ReadAt(ctx, p, s.UncompressedStart); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("strict read of an unverified span: %v, want a deadline error", err)
	}
	if strict.Failed() != nil || strict.stateOf(id) != stateEmpty || e.cache.Has(strict.cacheKey(id)) {
		t.Fatalf("after an abandoned strict read: failed=%v state=%v", strict.Failed(), strict.stateOf(id))
	}

	metrics, _ := NewMetrics(nil)
	deferred, err := New(e.z, gb, e.cache, Options{LayerDigest: e.dgst, FetchAhead: -1, Verify: VerifyDeferred, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	defer deferred.Close()
	if _, err := deferred.ReadAt(context.Background(), p, s.UncompressedStart); err != nil {
		t.Fatalf("deferred read: %v", err)
	}
	if !bytes.Equal(p, tar[s.UncompressedStart:s.UncompressedStart+512]) {
		t.Fatal("deferred read returned wrong bytes")
	}
	if n := testutil.ToFloat64(metrics.UnverifiedReads); n != 1 {
		t.Fatalf("%v unverified reads counted, want 1", n)
	}
	if got := testutil.ToFloat64(metrics.BytesFetched.WithLabelValues(ReasonPrefix)); got <= 0 || got >= float64(s.CompressedSize())/2 {
		t.Fatalf("prefix request fetched %v of the span's %d bytes", got, s.CompressedSize())
	}
	close(gb.open)
	waitState(t, deferred, id, stateVerified)
	if !e.cache.Has(deferred.cacheKey(id)) || deferred.Failed() != nil {
		t.Fatalf("span not cached after verification (failed=%v)", deferred.Failed())
	}
}

// TestDeferredTamperDetectedByFlight: a deferred read of a tampered span
// may see bytes, but the same flight goes on to check the digest and fails
// the layer without any background pass.
func TestDeferredTamperDetectedByFlight(t *testing.T) {
	reg := startMemRegistry(t)
	clean := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	id := clean.z.SpanOf(clean.entry(t, "big/one").UncompressedOffset + 100_000)
	e := newEnv(t, reg, mixedFiles(), 128<<10, tamper(t, clean, id))
	m := e.manager(t, Options{Verify: VerifyDeferred, FetchAhead: -1})
	s, _ := e.z.Span(id)
	if _, err := m.ReadAt(context.Background(), make([]byte, 256), s.UncompressedStart); err != nil && !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("deferred read: %v", err)
	}
	waitState(t, m, id, stateFailed)
	if !errors.Is(m.Failed(), ztoc.ErrSpanDigest) || e.cache.Has(m.cacheKey(id)) {
		t.Fatalf("failed=%v cached=%v", m.Failed(), e.cache.Has(m.cacheKey(id)))
	}
}

// TestServedThenTransferBroke: unverified bytes were served, then the
// transfer failed before the digest could be checked. The span is left
// partial (not verified, not cached); the background pass takes it first,
// verifies it and checks the served bytes against it.
func TestServedThenTransferBroke(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	id := e.z.SpanOf(e.entry(t, "big/one").UncompressedOffset + 300_000)
	s, _ := e.z.Span(id)
	gb := newGatedBlob(e.blob, s.CompressedEnd-100)
	reset := error(syscall.ECONNRESET)
	gb.fail.Store(&reset)
	m, err := New(e.z, gb, e.cache, Options{LayerDigest: e.dgst, FetchAhead: -1, Verify: VerifyDeferred})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.ReadAt(context.Background(), make([]byte, 512), s.UncompressedStart+10); err != nil {
		t.Fatalf("deferred read: %v", err)
	}
	waitState(t, m, id, statePartial)
	if m.Failed() != nil || e.cache.Has(m.cacheKey(id)) {
		t.Fatalf("failed=%v cached=%v", m.Failed(), e.cache.Has(m.cacheKey(id)))
	}
	gb.fail.Store(nil)
	close(gb.open)
	if _, _, err := m.FetchNext(context.Background()); err != nil {
		t.Fatalf("FetchNext: %v", err)
	}
	if st := m.stateOf(id); st != stateVerified || m.Failed() != nil {
		t.Fatalf("after the pass: state %v, failed %v", st, m.Failed())
	}
}

// TestFetchAheadBounded: a sequential reader gets spans fetched ahead, with
// no more range streams open at once than MaxParallel; scattered reads get
// no fetch-ahead.
func TestFetchAheadBounded(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 64<<10, nil)
	metrics, _ := NewMetrics(nil)
	gb := newGatedBlob(e.blob, 1<<62)
	m, err := New(e.z, gb, e.cache, Options{LayerDigest: e.dgst, FetchAhead: 3, MaxParallel: 3, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ent := e.entry(t, "big/one")
	got, err := readFile(context.Background(), m, ent, 32<<10)
	if err != nil || !bytes.Equal(got, e.files[40].data) {
		t.Fatalf("sequential read: %v", err)
	}
	if n := testutil.ToFloat64(metrics.SpansFetched.WithLabelValues(ReasonAhead)); n == 0 {
		t.Fatal("no span fetched ahead of a sequential reader")
	}
	if n := gb.maxOpen.Load(); n > 3 {
		t.Fatalf("%d range streams open at once, MaxParallel is 3", n)
	}

	metrics2, _ := NewMetrics(nil)
	m2 := e.manager(t, Options{FetchAhead: 3, Metrics: metrics2, HotSpans: -1})
	for i := 39; i >= 0; i -= 3 { // small files, backwards
		f := e.files[i]
		if got, err := readFile(context.Background(), m2, e.entry(t, f.name), 4096); err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	if n := testutil.ToFloat64(metrics2.SpansFetched.WithLabelValues(ReasonAhead)); n != 0 {
		t.Fatalf("%v spans fetched ahead of scattered reads", n)
	}
}

// startsBlob counts the range requests starting at each blob offset. Every
// flight asks for its span's first byte exactly once (a deferred-mode
// flight's second request starts inside the span), so the count at a span's
// start is how many times the span was fetched.
type startsBlob struct {
	BlobReader
	mu     sync.Mutex
	starts map[int64]int
}

func (b *startsBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	b.mu.Lock()
	b.starts[start]++
	b.mu.Unlock()
	return b.BlobReader.FetchRange(ctx, start, end)
}

// TestReadsAcrossSpansConcurrent: many readers, reads crossing span
// boundaries, both modes, and with one hot span and two fetch slots (so
// span buffers are recycled all the time): every byte right, no span
// fetched twice. A reader arriving just as a span's flight settled once
// started a second fetch of it (the state was looked at apart from joining
// the flight); widening that window with a sleep failed this test in every
// mode.
func TestReadsAcrossSpansConcurrent(t *testing.T) {
	reg := startMemRegistry(t)
	cases := map[string]Options{
		"strict":         {},
		"deferred":       {Verify: VerifyDeferred},
		"strict-tight":   {HotSpans: 1, MaxParallel: 2, FetchAhead: 1},
		"deferred-tight": {Verify: VerifyDeferred, HotSpans: 1, MaxParallel: 2, FetchAhead: 1},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, reg, mixedFiles(), 64<<10, nil)
			tar := tarBytes(t, e)
			metrics, _ := NewMetrics(nil)
			opts.Metrics = metrics
			opts.LayerDigest = e.dgst
			sb := &startsBlob{BlobReader: e.blob, starts: map[int64]int{}}
			m, err := New(e.z, sb, e.cache, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					p := make([]byte, 100_000+g*7919)
					for off := int64(g * 1000); off < m.Size(); off += int64(len(p)) * 3 {
						n, err := m.ReadAt(context.Background(), p, off)
						if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], tar[off:off+int64(n)]) {
							t.Errorf("read at %d: n=%d err=%v", off, n, err)
							return
						}
					}
				})
			}
			wg.Wait()
			waitNoFlights(t, m) // fetch-ahead may still run
			sb.mu.Lock()
			defer sb.mu.Unlock()
			spans := 0
			for id := range ztoc.SpanID(e.z.NumSpans()) {
				switch n := sb.starts[m.spans[id].CompressedStart]; {
				case n > 1:
					t.Errorf("span %d fetched %d times", id, n)
				case n == 1:
					spans++
				}
			}
			var fetches float64
			for _, r := range []string{ReasonDemand, ReasonAhead} {
				fetches += testutil.ToFloat64(metrics.SpansFetched.WithLabelValues(r))
			}
			if fetches != float64(spans) {
				t.Fatalf("%v span fetches counted, %d spans requested", fetches, spans)
			}
		})
	}
}

func TestHotSpans(t *testing.T) {
	h := newHotSpans(2)
	defer h.close()
	var pool bufPool
	bufs := make([]*spanBuf, 4)
	for id := range ztoc.SpanID(3) {
		bufs[id] = newSpanBuf(&pool, 4)
		copy(bufs[id].b, []byte{byte(id), 1, 2, 3})
		h.add(id, bufs[id])
	}
	if n := bufs[0].refs.Load(); n != 1 {
		t.Fatalf("evicted span's buffer has %d references, want the creator's 1", n)
	}
	p := make([]byte, 2)
	if h.read(0, p, 0) {
		t.Fatal("span 0 still held after two newer ones")
	}
	if !h.read(2, p, 1) || p[0] != 1 || p[1] != 2 {
		t.Fatalf("read of span 2: %v", p)
	}
	if h.read(2, make([]byte, 4), 1) {
		t.Fatal("read past the end of a held span succeeded")
	}
	h.mu.Lock()
	for i := range h.ents {
		h.ents[i].used = time.Now().Add(-2 * hotIdle)
	}
	h.mu.Unlock()
	h.trim()
	if h.has(1) || h.has(2) {
		t.Fatal("idle spans kept after trim")
	}
	if n := bufs[2].refs.Load(); n != 1 {
		t.Fatalf("trimmed span's buffer has %d references, want 1", n)
	}
	h.add(5, bufs[2])
	h.close()
	if h.has(5) || bufs[2].refs.Load() != 1 {
		t.Fatal("span held after close")
	}
	h.add(6, bufs[2]) // after close: ignored, no timer left running
	if h.has(6) {
		t.Fatal("span held after close")
	}
}

func TestStreams(t *testing.T) {
	var s streams
	off := int64(10 << 20)
	seq := 0
	for range 16 { // one reader, 128 KiB reads
		if s.note(off, off+128<<10) {
			seq++
		}
		off += 128 << 10
	}
	if seq < 10 {
		t.Fatalf("%d of 16 sequential reads recognised", seq)
	}
	// A second reader far away starts its own stream without breaking
	// the first.
	if s.note(100<<20, 100<<20+4096) {
		t.Fatal("first read of a new stream counted as sequential")
	}
	if !s.note(off, off+4096) {
		t.Fatal("first stream lost")
	}
}

func TestHotSpansKeepSpansFetchedAhead(t *testing.T) {
	h := newHotSpans(3)
	defer h.close()
	var pool bufPool
	p := make([]byte, 1)
	add := func(id ztoc.SpanID) {
		b := newSpanBuf(&pool, 4)
		h.add(id, b)
		b.release()
	}
	// A sequential reader in span 0 while spans 1 and 2 arrive ahead of it.
	add(0)
	add(1)
	add(2)
	h.read(0, p, 0)
	// It moves on to span 1, and span 3 arrives: span 0 (behind the reader)
	// must go, not span 2 (ahead of it, never read yet).
	h.read(1, p, 0)
	add(3)
	for _, id := range []ztoc.SpanID{1, 2, 3} {
		if !h.has(id) {
			t.Fatalf("span %d dropped; spans behind the reader should go first", id)
		}
	}
	if h.has(0) {
		t.Fatal("span 0, behind the reader, still held")
	}
}

func TestBufferPoolBounds(t *testing.T) {
	pool := NewBoundedBufferPool(10<<10, 50*time.Millisecond)
	p := &pool.p
	a, b, c := p.get(4<<10), p.get(4<<10), p.get(1<<10)
	p.put(a)
	p.put(b)
	p.put(c)
	if got := pool.FreeBytes(); got > 10<<10 {
		t.Fatalf("pool keeps %d bytes, bound is %d", got, 10<<10)
	}
	// The smallest buffer that fits is taken.
	if got := p.get(1 << 10); cap(got) != cap(c) {
		t.Fatalf("got a %d-byte buffer for 1 KiB", cap(got))
	}
	if got := p.get(3 << 10); cap(got) < 3<<10 || len(got) != 3<<10 {
		t.Fatalf("got len %d cap %d for 3 KiB", len(got), cap(got))
	}
	p.put(make([]byte, 100<<10)) // larger than the whole bound: not kept
	if got := pool.FreeBytes(); got > 10<<10 {
		t.Fatalf("pool keeps %d bytes after an oversized put", got)
	}
	p.put(make([]byte, 2<<10))
	deadline := time.Now().Add(5 * time.Second)
	for pool.FreeBytes() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pool still keeps %d bytes long after its idle period", pool.FreeBytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	none := NewBoundedBufferPool(-1, 0)
	none.p.put(make([]byte, 1024))
	if none.FreeBytes() != 0 {
		t.Fatal("a pool bounded at nothing kept a buffer")
	}
}

// stuckBlob holds every range request until release is closed, whatever
// the request's context says, then lets it go on (or fail if cancelled):
// a transfer that takes a while to notice its cancellation.
type stuckBlob struct {
	BlobReader
	release chan struct{}
}

func (s *stuckBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	<-s.release
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.BlobReader.FetchRange(ctx, start, end)
}

// TestReaderAfterAbandonedFlight: a read that arrives while an abandoned
// flight of its span is still winding down gets its bytes from a fresh
// flight, not the abandoned flight's "context canceled" (which FUSE would
// turn into EIO for an open the kernel restarted after a signal).
func TestReaderAfterAbandonedFlight(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	tar := tarBytes(t, e)
	sb := &stuckBlob{BlobReader: e.blob, release: make(chan struct{})}
	m, err := New(e.z, sb, e.cache, Options{LayerDigest: e.dgst, FetchAhead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := make([]byte, 512)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := m.ReadAt(ctx, p, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first read: %v, want its deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.ReadAt(context.Background(), p, 0)
		done <- err
	}()
	// Release the transfers only once the second reader waits on a flight
	// of the span, so that it arrives while the abandoned one winds down.
	for deadline := time.Now().Add(10 * time.Second); !m.hasWaiter(0); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second reader never waited on a flight")
		}
	}
	close(sb.release)
	if err := <-done; err != nil {
		t.Fatalf("read after an abandoned flight: %v", err)
	}
	if !bytes.Equal(p, tar[:512]) {
		t.Fatal("read after an abandoned flight returned wrong bytes")
	}
}

// hasWaiter says whether a reader waits on a flight of span id.
func (m *Manager) hasWaiter(id ztoc.SpanID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.flights[id]
	return f != nil && f.waiters > 0
}
