// Package span serves the uncompressed tar of a lazily loaded layer: a read
// is mapped to the zTOC spans that hold it; each span's compressed bytes are
// fetched from the registry, checked against the span digest, inflated from
// the span's checkpoint and stored uncompressed in the cache, so any later
// read of it (foreground or background-fetched) is a local read.
//
// Concepts:
//   - One Manager per mounted layer. Reads of one span that overlap in time
//     share one fetch (a flight); the fetch is cancelled when every reader
//     waiting for it has gone (an interrupted read(2) cancels its HTTP
//     request), except fetches the Manager itself started (fetch-ahead).
//   - A flight is a pipeline: the span's bytes are hashed and inflated while
//     they stream in (flight.go, stream.go), so a span costs about
//     max(transfer, inflate), not their sum, and a reader is released as
//     soon as its bytes are inflated and may be served (below), while the
//     rest of the span is still being inflated.
//   - Each span has a state (state.go, with an explicit transition table),
//     and each flight a phase (phase.go, likewise): fetching, then
//     verified, tampered or broken, then done or failed; the fetcher's
//     transfer state and the inflater's progress are kept apart.
//   - Readers that continue a stream trigger fetch-ahead of the next spans,
//     several in flight at once (ahead.go); the last few verified spans are
//     kept in memory for a short while (hot.go). Span buffers are reference
//     counted and recycled through a BufferPool that all Managers of a
//     process should share (bufpool.go).
//   - Memory per layer is bounded: at most MaxParallel spans buffered
//     (compressed and uncompressed) plus HotSpans uncompressed ones, plus
//     up to MaxParallel more (usually also hot) whose flight is writing
//     them to the cache.
//   - Completion (FetchNext, driven by fs/bgfetch; pass.go) streams the
//     blob in order from byte 0 through ztoc.VerifyStream, one continuous
//     inflate that checks every checkpoint (offsets and window), span
//     digest, gzip trailer and TOC entry, while the same bytes feed the
//     layer digest. Each span's real bytes are compared with what was
//     served and cached. By default spans fetched earlier on demand are
//     fetched a second time by this pass: that is the price of binding what
//     was served to the layer digest. With FullSpeed (fullspeed.go) their
//     compressed bytes are kept in the cache for the pass instead, and the
//     pass's bytes are fetched ahead of it by parallel range requests.
//
// Verification modes, the trade-off (Options.Verify):
//   - VerifyStrict (default): a read is answered only once the digest of the
//     whole span matched. A span that fails verification is an error, never
//     data. A small read therefore waits for a whole span's compressed bytes
//     (~1–4 MiB) to arrive and be hashed, though not for the whole span to be
//     inflated: the bytes it needs are inflated alongside the transfer.
//   - VerifyDeferred: a read is answered as soon as its bytes are inflated,
//     before the span's digest could be checked (a digest covers the whole
//     span). A read of the start of an unfetched span first asks for about
//     the compressed prefix it needs, so it is answered after a small
//     transfer; the rest of the span streams in on a second request and is
//     verified by the same flight, which keeps running even if the reader
//     leaves. A mismatch fails the layer (EIO from then on), is counted and
//     logged: tampering is always detected, but after the container may
//     have seen the bytes. If the transfer breaks off after unverified bytes
//     were served, a hash of them is kept and the next verified fetch of the
//     span (the background pass takes such spans first) must reproduce them.
//     The tar header check on first open still runs.
//
// The default is strict: on a production node a container must never see
// bytes that no digest vouches for; deferred trades that for cold small-file
// latency and transfer on slow links (see the benchmarks).
//
// Hazards: the zTOC and the registry are untrusted. Span sizes are bounded
// (Options.MaxSpanBytes) before anything is allocated, and at most
// MaxParallel spans are buffered at once; the inflater runs on unverified
// bytes but its output is bounded by the span size; unverified bytes never
// reach the cache.
package span

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc"
)

// BlobReader streams byte ranges of the layer blob; fs/remote's Blob
// implements it. The stream must stop transferring when closed.
type BlobReader interface {
	FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error)
}

// Cache stores verified uncompressed spans; fs/cache's Cache implements it.
// Any ReadAt error is treated as a miss. ReadAt returns io.EOF only with a
// short read past the end of a value.
type Cache interface {
	Put(key string, data []byte) error
	ReadAt(key string, p []byte, off int64) (int, error)
}

// ErrLayerFailed reports a layer that failed verification: every read of it
// fails from then on (the FUSE layer turns it into EIO).
var ErrLayerFailed = errors.New("layer failed verification")

// VerifyMode selects when span digests are checked (see the package doc).
type VerifyMode int

const (
	// VerifyStrict serves only verified bytes.
	VerifyStrict VerifyMode = iota
	// VerifyDeferred serves small reads from unverified span prefixes and
	// verifies them later.
	VerifyDeferred
)

// Options holds a Manager's knobs; the zero value of each field is a
// sensible default.
type Options struct {
	// LayerDigest is the layer blob's digest: the cache key prefix and the
	// completion check. Required.
	LayerDigest digest.Digest
	// Verify selects strict (default) or deferred verification.
	Verify VerifyMode
	// FetchAhead is how many spans past a sequential read are fetched
	// ahead (default GOMAXPROCS, at least 2 and at most 8: with the span
	// being read, one more inflater than cores, so every core inflates
	// while transfers overlap; more only adds memory; negative disables).
	FetchAhead int
	// MaxParallel bounds the spans of this layer fetched (and buffered:
	// compressed plus uncompressed bytes) at once (default FetchAhead+2).
	MaxParallel int
	// MaxSpanBytes bounds a span's compressed and uncompressed size
	// (default 64 MiB); a zTOC declaring more is refused.
	MaxSpanBytes int64
	// HotSpans is how many recently verified spans are kept in memory for
	// a couple of seconds (default FetchAhead+1: the spans fetched ahead
	// and the one being read; negative disables).
	HotSpans int
	// Buffers recycles span buffers; share one among all Managers of a
	// process. Nil gives the Manager a pool of its own.
	Buffers *BufferPool
	// Metrics receives the counters; nil means unregistered ones.
	Metrics *Metrics
	// Foreground, when set, is called at the start of every read and the
	// returned func at its end; fs/bgfetch uses it to pause.
	Foreground func() (done func())
	// OnFail, when set, is called once, when the layer fails verification,
	// with the reason (fs records it on disk).
	OnFail func(reason error)
}

// Manager serves one layer's uncompressed bytes. It is safe for concurrent
// use. Close stops its goroutines.
type Manager struct {
	z       *ztoc.Ztoc
	blob    BlobReader
	cache   Cache
	opts    Options
	metrics *Metrics
	spans   []ztoc.Span
	total   int64  // uncompressed size
	ztocID  string // the zTOC's identity in cache keys (identity.go)

	hdrOnce    sync.Once
	hdrOffsets map[int64]int64 // data offset → header offset
	hdrErr     error
	checked    sync.Map // data offset → struct{}: headers verified

	ctx    context.Context // lifetime of fetch-ahead and flights
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // bounds concurrent fetches

	// mu guards the span table and everything that changes with it.
	mu      sync.Mutex
	state   []spanState
	flights map[ztoc.SpanID]*flight
	// streaming counts flights waiting for or holding a fetch slot (not
	// those only writing the cache any more).
	streaming int
	partials  map[ztoc.SpanID]servedPrefix // unverified bytes served by a flight that failed
	verified  int64                        // compressed bytes of verified spans
	seq       streams                      // where recent readers stopped, to spot sequential ones
	pass      passState                    // background completion progress
	kept      map[ztoc.SpanID]bool         // spans whose compressed bytes the cache keeps for the pass

	hot *hotSpans // recently verified spans in memory
	// bufs recycles span buffers (bufpool.go).
	bufs *BufferPool

	failed atomic.Pointer[error]
	// full is set by FullSpeed (fullspeed.go); nil for idle completion.
	full atomic.Pointer[fullSpeed]
}

// New returns a Manager for the layer described by z, reading the blob
// through blob and caching spans in cache.
func New(z *ztoc.Ztoc, blob BlobReader, cache Cache, opts Options) (*Manager, error) {
	if err := opts.LayerDigest.Validate(); err != nil {
		return nil, fmt.Errorf("span manager: layer digest: %w", err)
	}
	setDefaults(&opts)
	m := &Manager{z: z, blob: blob, cache: cache, opts: opts, metrics: opts.Metrics,
		total: z.UncompressedArchiveSize, flights: map[ztoc.SpanID]*flight{},
		partials: map[ztoc.SpanID]servedPrefix{}, kept: map[ztoc.SpanID]bool{}, sem: make(chan struct{}, opts.MaxParallel),
		hot: newHotSpans(opts.HotSpans), bufs: opts.Buffers}
	if m.bufs == nil {
		m.bufs = NewBufferPool()
	}
	if err := m.loadSpans(); err != nil {
		return nil, fmt.Errorf("span manager for %s: %w", opts.LayerDigest, err)
	}
	m.ztocID = ZtocIdentity(z)
	if m.metrics == nil {
		m.metrics, _ = NewMetrics(nil)
	}
	m.state = make([]spanState, len(m.spans))
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

func setDefaults(o *Options) {
	if o.FetchAhead == 0 {
		o.FetchAhead = min(max(runtime.GOMAXPROCS(0), 2), 8)
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = max(o.FetchAhead, 0) + 2
	}
	if o.MaxSpanBytes <= 0 {
		o.MaxSpanBytes = 64 << 20
	}
	if o.HotSpans == 0 {
		o.HotSpans = max(o.FetchAhead, 0) + 1
	}
}

// loadSpans computes and checks the geometry of every span: contiguous,
// bounded, covering the whole tar.
func (m *Manager) loadSpans() error {
	n := m.z.NumSpans()
	if n == 0 || m.total <= 0 {
		return fmt.Errorf("layer has no spans: %w", ztoc.ErrInvalid)
	}
	m.spans = make([]ztoc.Span, n)
	next := int64(0)
	for i := range m.spans {
		s, err := m.z.Span(ztoc.SpanID(i))
		if err != nil {
			return err
		}
		if err := s.Digest.Validate(); err != nil || s.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("span %d digest %q: %w", i, s.Digest, ztoc.ErrInvalid)
		}
		if s.UncompressedStart != next || s.CompressedSize() > m.opts.MaxSpanBytes ||
			s.UncompressedSize() > m.opts.MaxSpanBytes {
			return fmt.Errorf("span %d: uncompressed [%d,%d), %d compressed bytes (limit %d): %w",
				i, s.UncompressedStart, s.UncompressedEnd, s.CompressedSize(), m.opts.MaxSpanBytes, ztoc.ErrInvalid)
		}
		next = s.UncompressedEnd
		m.spans[i] = s
	}
	if next != m.total {
		return fmt.Errorf("spans end at %d, tar is %d bytes: %w", next, m.total, ztoc.ErrInvalid)
	}
	return nil
}

// Size returns the size of the uncompressed tar.
func (m *Manager) Size() int64 { return m.total }

// Failed returns nil, or the reason the layer failed verification (wrapping
// ErrLayerFailed).
func (m *Manager) Failed() error {
	if p := m.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Progress returns the compressed bytes of spans verified so far and the
// blob size.
func (m *Manager) Progress() (fetched, total int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	total = m.z.CompressedArchiveSize
	if m.pass.done {
		return total, total
	}
	// Spans overlap by a byte at some boundaries, and the gzip header is in
	// no span, so the sum is approximate until the pass completes.
	return min(m.verified, total), total
}

// Close cancels fetch-ahead and background work and waits for it.
func (m *Manager) Close() error {
	m.cancel()
	m.stopPass()
	m.wg.Wait()
	m.hot.close()
	return nil
}

// fail marks the layer failed (the first reason wins), counts and logs it.
func (m *Manager) fail(ctx context.Context, kind string, reason error) error {
	err := fmt.Errorf("layer %s: %w: %w", m.opts.LayerDigest, ErrLayerFailed, reason)
	if m.failed.CompareAndSwap(nil, &err) {
		m.metrics.VerifyFailures.WithLabelValues(kind).Inc()
		log.G(ctx).WithError(reason).WithField("layer", m.opts.LayerDigest).
			WithField("kind", kind).Error("layer failed verification; reads now fail with EIO")
		if m.opts.OnFail != nil {
			m.opts.OnFail(reason)
		}
	}
	return *m.failed.Load()
}

// setState moves span id to a new state; the caller holds m.mu.
func (m *Manager) setState(id ztoc.SpanID, to spanState) {
	from := m.state[id]
	if !canTransition(from, to) {
		panic(fmt.Sprintf("span %d: illegal transition %v → %v", id, from, to))
	}
	if to == stateVerified && from != stateVerified {
		m.verified += m.spans[id].CompressedSize()
	}
	m.state[id] = to
}

// cacheKey names span id's uncompressed bytes in the cache. The zTOC is
// part of the key: two zTOCs of one layer (other span sizes, other tools)
// cut it into different spans, and must never read each other's entries.
func (m *Manager) cacheKey(id ztoc.SpanID) string {
	return fmt.Sprintf("%s/%s/%d", m.opts.LayerDigest, m.ztocID, id)
}

// ReadAt reads the uncompressed tar bytes [off, off+len(p)). It returns
// io.EOF with a short count at the end of the tar, an error wrapping
// ErrLayerFailed once the layer failed verification, and the context's
// error when ctx ends first.
func (m *Manager) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := m.Failed(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= m.total {
		return 0, io.EOF
	}
	if m.opts.Foreground != nil {
		defer m.opts.Foreground()()
	}
	defer func(start time.Time) { m.metrics.ReadSeconds.Observe(time.Since(start).Seconds()) }(time.Now())
	end := min(off+int64(len(p)), m.total)
	first, last := m.z.SpansFor(off, end-off)
	m.startFlights(off, end, first, last)
	n := 0
	for id := first; id <= last; id++ {
		s := m.spans[id]
		lo, hi := max(off, s.UncompressedStart), min(end, s.UncompressedEnd)
		if hi <= lo {
			continue // an empty span (between gzip members)
		}
		if err := m.readSpan(ctx, id, p[lo-off:hi-off], lo-s.UncompressedStart); err != nil {
			return n, fmt.Errorf("read [%d,%d) of layer %s: %w", off, end, m.opts.LayerDigest, err)
		}
		n += int(hi - lo)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
