package span

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc"
)

// Full-speed completion (FullSpeed) keeps the completion pass exactly as it
// is, one continuous VerifyStream over the blob from byte 0 (pass.go), and
// only changes where its bytes come from and when they are fetched:
//   - A window of up to Parallel segments ahead of the pass is fetched at
//     once, each by its own range request, so the link is kept full and the
//     transfer overlaps the pass's inflate instead of alternating with it.
//   - Spans that foreground reads fetched keep their compressed bytes in the
//     cache (compressedKey) until the pass consumes them: the pass reads them
//     from there, checked against the span digest again, instead of fetching
//     them a second time. Dropped or damaged ones are fetched as before.
//   - Background work yields to foreground transfers (a span a read needs,
//     or one fetched ahead of a sequential reader; noteDemand): a request
//     starts only when the scheduler's wait lets it, one in progress when a
//     foreground transfer starts is broken off and resumed later from where
//     it stopped, and the pass itself waits between pieces (pass.go feed).
//     Background transfers never take a foreground fetch slot
//     (Manager.sem).

// aheadPiece is how many bytes a background transfer reads at a time
// (and counts in the fetched-bytes metric).
const aheadPiece = 64 << 10

// fullSpeed is what FullSpeed configured; immutable once stored.
type fullSpeed struct {
	parallel int
	chunk    int64 // most bytes of one segment fetched from the registry
	wait     func(context.Context) error
	preempt  func() <-chan struct{}
	demand   func() (done func())
}

// remover is implemented by caches that can drop an entry (fs/cache's
// Cache does): compressed spans are dropped once the pass consumed them.
type remover interface {
	Remove(key string)
}

// FullSpeed makes the completion pass fetch up to parallel segments of the
// blob ahead of itself and reuse the compressed bytes of spans fetched on
// demand. Background transfers start only once wait returns (it returns
// early with ctx's error), and a transfer is broken off when the channel
// preempt returned at its start is closed, to resume from where it was
// after the next wait: bytes still on their way when a foreground read
// starts would otherwise take the link from it. demand, when not nil, is
// called when a foreground transfer starts (a span a read needs, or one
// fetched ahead of a sequential reader), and the func it returns when the
// transfer ends. fs/bgfetch's scheduler gives all three: wait
// blocks while demand is in progress, and preempt's channel is closed when
// a demand starts. Nil funcs never hold anything back. Call it before the
// first completion step.
func (m *Manager) FullSpeed(parallel int, wait func(context.Context) error, preempt func() <-chan struct{}, demand func() func()) {
	if parallel < 1 {
		parallel = 1
	}
	if wait == nil {
		wait = func(context.Context) error { return nil }
	}
	if preempt == nil {
		preempt = func() <-chan struct{} { return nil }
	}
	m.full.Store(&fullSpeed{parallel: parallel, chunk: passChunk, wait: wait, preempt: preempt, demand: demand})
}

// noteDemand tells the scheduler that a foreground transfer started; the
// caller calls the returned func, once or more, when it ends.
func (m *Manager) noteDemand() (done func()) {
	if fs := m.full.Load(); fs != nil && fs.demand != nil {
		return sync.OnceFunc(fs.demand())
	}
	return func() {}
}

// compressedKey names span id's compressed bytes in the cache. For an
// uncompressed (tar) layer they are the span's own bytes, under cacheKey.
func (m *Manager) compressedKey(id ztoc.SpanID) string {
	if m.spans[id].Checkpoint == nil {
		return m.cacheKey(id)
	}
	return m.cacheKey(id) + "/compressed"
}

// keepCompressed stores span id's verified compressed bytes for the pass,
// when full-speed completion is on and the pass has not gone past the span
// yet. A cache that refuses them only costs a second fetch later.
func (m *Manager) keepCompressed(id ztoc.SpanID, comp []byte) {
	s := m.spans[id]
	if m.full.Load() == nil || int64(len(comp)) < s.CompressedSize() {
		return
	}
	m.mu.Lock()
	passed := m.pass.done || s.CompressedEnd <= m.pass.fed ||
		(m.pass.ahead != nil && s.CompressedEnd <= m.pass.ahead.claimed.Load())
	m.mu.Unlock()
	if passed {
		return
	}
	if s.Checkpoint != nil {
		if err := m.cache.Put(m.compressedKey(id), comp[:s.CompressedSize()]); err != nil {
			return
		}
	}
	m.mu.Lock()
	m.kept[id] = true
	m.mu.Unlock()
}

// keptAt returns a span whose compressed bytes are kept and that covers
// blob offset pos.
func (m *Manager) keptAt(pos int64) (ztoc.SpanID, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.kept) == 0 {
		return 0, false
	}
	// Spans are in blob order; neighbours may share a byte, so the span
	// found and the one after it are both looked at.
	i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].CompressedEnd > pos })
	for j := i; j < min(i+2, len(m.spans)); j++ {
		s := m.spans[j]
		if s.CompressedStart <= pos && pos < s.CompressedEnd && m.kept[s.ID] {
			return s.ID, true
		}
	}
	return 0, false
}

// nextKeptStart returns the blob offset of the first kept span starting
// after pos and before limit, or limit.
func (m *Manager) nextKeptStart(pos, limit int64) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.kept) == 0 {
		return limit
	}
	i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].CompressedStart > pos })
	for ; i < len(m.spans) && m.spans[i].CompressedStart < limit; i++ {
		if m.kept[m.spans[i].ID] {
			return m.spans[i].CompressedStart
		}
	}
	return limit
}

// segment is one piece of the blob fetched ahead of the pass: from the
// registry, or from a kept span in the cache.
type segment struct {
	start, end int64
	kept       bool        // read from span id's kept compressed bytes
	id         ztoc.SpanID // when kept
	done       chan struct{}
	data       []byte // once done, when err is nil
	err        error
}

// aheadWindow fetches the blob in order ahead of one pass. Segments are
// claimed in order; up to parallel of them are in flight or waiting to be
// consumed at once.
type aheadWindow struct {
	m      *Manager
	fs     *fullSpeed
	ctx    context.Context
	cancel context.CancelFunc

	claimed atomic.Int64 // where the next segment starts

	mu   sync.Mutex
	segs []*segment // claimed and not consumed, in blob order
}

// newAheadWindow starts a window at blob offset pos; the caller holds m.mu.
func (m *Manager) newAheadWindowLocked(fs *fullSpeed, pos int64) *aheadWindow {
	ctx, cancel := context.WithCancel(m.ctx)
	w := &aheadWindow{m: m, fs: fs, ctx: ctx, cancel: cancel}
	w.claimed.Store(pos)
	return w
}

// stop cancels the window's transfers.
func (w *aheadWindow) stop() { w.cancel() }

// take returns the blob bytes starting at pos (the next segment), waiting
// for them. After an error the window starts over from pos at the next
// call, so a failed transfer is retried once, by the next step.
func (w *aheadWindow) take(ctx context.Context, pos int64) ([]byte, error) {
	w.mu.Lock()
	if len(w.segs) > 0 && w.segs[0].start != pos || len(w.segs) == 0 && w.claimed.Load() != pos {
		w.restartLocked(pos)
	}
	w.fillLocked()
	if len(w.segs) == 0 {
		w.mu.Unlock()
		return nil, fmt.Errorf("blob bytes from %d: past the end (%d)", pos, w.m.z.CompressedArchiveSize)
	}
	seg := w.segs[0]
	w.mu.Unlock()
	select {
	case <-seg.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for blob bytes [%d,%d): %w", seg.start, seg.end, context.Cause(ctx))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if seg.err != nil {
		w.restartLocked(pos)
		return nil, seg.err
	}
	w.segs = w.segs[1:]
	w.fillLocked()
	if seg.kept && w.m.spans[seg.id].Checkpoint != nil {
		if r, ok := w.m.cache.(remover); ok {
			r.Remove(w.m.compressedKey(seg.id))
		}
		w.m.mu.Lock()
		delete(w.m.kept, seg.id)
		w.m.mu.Unlock()
	}
	return seg.data, nil
}

// restartLocked drops every claimed segment and starts claiming at pos;
// the caller holds w.mu. The transfers dropped are cancelled.
func (w *aheadWindow) restartLocked(pos int64) {
	w.cancel()
	w.ctx, w.cancel = context.WithCancel(w.m.ctx)
	w.segs = nil
	w.claimed.Store(pos)
}

// fillLocked claims segments until parallel are outstanding or the blob is
// all claimed, and starts fetching them; the caller holds w.mu.
func (w *aheadWindow) fillLocked() {
	size := w.m.z.CompressedArchiveSize
	for len(w.segs) < w.fs.parallel {
		pos := w.claimed.Load()
		if pos >= size {
			return
		}
		seg := &segment{start: pos, done: make(chan struct{})}
		if id, ok := w.m.keptAt(pos); ok {
			seg.kept, seg.id, seg.end = true, id, w.m.spans[id].CompressedEnd
		} else {
			seg.end = w.m.nextKeptStart(pos, min(pos+w.fs.chunk, size))
		}
		w.claimed.Store(seg.end)
		w.segs = append(w.segs, seg)
		ctx := w.ctx
		w.m.wg.Add(1)
		go func() {
			defer w.m.wg.Done()
			defer close(seg.done)
			seg.data, seg.err = w.fetch(ctx, seg)
		}()
	}
}

// fetch gets a segment's bytes: a kept span from the cache when it is
// still there and matches its digest, else the range from the registry.
func (w *aheadWindow) fetch(ctx context.Context, seg *segment) ([]byte, error) {
	if seg.kept {
		if data, ok := w.readKept(seg); ok {
			return data, nil
		}
	}
	return w.fetchRange(ctx, seg.start, seg.end)
}

// readKept reads span seg.id's kept compressed bytes and checks them
// against the span digest (the disk may have changed them since), then
// returns the part from seg.start.
func (w *aheadWindow) readKept(seg *segment) ([]byte, bool) {
	m := w.m
	s := m.spans[seg.id]
	buf := make([]byte, s.CompressedSize())
	if n, err := m.cache.ReadAt(m.compressedKey(seg.id), buf, 0); err != nil || n != len(buf) {
		return nil, false
	}
	if digest.NewDigestFromBytes(digest.SHA256, sha256Sum(buf)) != s.Digest {
		return nil, false
	}
	return buf[seg.start-s.CompressedStart:], true
}

func sha256Sum(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// fetchRange reads the blob bytes [start, end). Each range request starts
// once no foreground read waits on the network; one that a foreground read
// preempts is broken off, and the rest asked for again after the wait.
func (w *aheadWindow) fetchRange(ctx context.Context, start, end int64) ([]byte, error) {
	buf := make([]byte, end-start) // at most fs.chunk
	for pos := 0; pos < len(buf); {
		if err := w.fs.wait(ctx); err != nil {
			return nil, fmt.Errorf("fetch blob bytes [%d,%d): %w", start, end, err)
		}
		n, err := w.transfer(ctx, buf[pos:], start+int64(pos))
		pos += n
		if err != nil && !errors.Is(err, errPreempted) {
			return nil, fmt.Errorf("fetch blob bytes [%d,%d): %d received: %w", start, end, pos, err)
		}
	}
	return buf, nil
}

// errPreempted ends a background transfer broken off for a foreground
// one. It is a cancellation: fs/remote's health tracking must not count it
// as registry trouble (a failed request makes the next Check probe the
// registry, and a probe that times out on a loaded link fails a container
// start).
var errPreempted = fmt.Errorf("background transfer preempted by a foreground one: %w", context.Canceled)

// transfer fills dst from blob offset off in one range request, broken off
// with errPreempted when a foreground read starts meanwhile; it returns the
// bytes received either way.
func (w *aheadWindow) transfer(ctx context.Context, dst []byte, off int64) (int, error) {
	m := w.m
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if pre := w.fs.preempt(); pre != nil {
		select {
		case <-pre: // a foreground transfer runs: not even a request
			return 0, errPreempted
		default:
		}
		go func() {
			select {
			case <-pre:
				cancel(errPreempted)
			case <-tctx.Done():
			}
		}()
	}
	rc, err := m.blob.FetchRange(tctx, off, off+int64(len(dst)))
	if err != nil {
		return 0, preempted(tctx, err)
	}
	defer rc.Close()
	counter := m.metrics.BytesFetched.WithLabelValues(ReasonBackground)
	pos := 0
	for pos < len(dst) {
		n, err := io.ReadFull(rc, dst[pos:min(len(dst), pos+aheadPiece)])
		pos += n
		counter.Add(float64(n))
		if err != nil {
			return pos, preempted(tctx, err)
		}
	}
	return pos, nil
}

// preempted returns errPreempted when tctx was ended by a foreground
// read, else err.
func preempted(tctx context.Context, err error) error {
	if errors.Is(context.Cause(tctx), errPreempted) {
		return errPreempted
	}
	return err
}
