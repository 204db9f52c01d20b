package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// RangeReader streams byte ranges of a blob; *Blob and *Live implement it
// (and so satisfy fs/span's BlobReader). Closing a stream must stop its
// transfer.
type RangeReader interface {
	FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error)
}

// Opener opens a blob anew, probing the registry (for example a closure
// over OpenReference). Live calls it once in NewLive and again on each
// Reprobe, so it must reach the registry rather than return a cached
// handle.
type Opener func(ctx context.Context) (RangeReader, error)

// FetchLimit bounds the range streams open at once over many blobs (every
// layer of a file system shares one). A stream holds its slot from
// FetchRange until it is closed, so a reader that keeps a stream open
// while it works keeps others waiting. A nil *FetchLimit is no bound.
type FetchLimit struct {
	sem *semaphore.Weighted
}

// NewFetchLimit returns a bound of n open streams; n <= 0 means none (nil).
func NewFetchLimit(n int) *FetchLimit {
	if n <= 0 {
		return nil
	}
	return &FetchLimit{sem: semaphore.NewWeighted(int64(n))}
}

// acquire waits for a slot and returns the function that frees it (safe to
// call more than once).
func (l *FetchLimit) acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	if err := l.sem.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("wait for a fetch slot: %w", err)
	}
	return sync.OnceFunc(func() { l.sem.Release(1) }), nil
}

// Health is what a Live knows about its registry's recent answers.
type Health struct {
	// LastContact is when the registry last answered: the last successful
	// probe or range request.
	LastContact time.Time
	// LastError is the last registry failure after LastContact, or nil.
	// A reader that gave up (a cancelled context) is not a registry
	// failure and is not recorded.
	LastError error
}

// Live is the blob a layer reads through for as long as it is mounted. It
// keeps the current connection (an opened blob) and can replace it with a
// fresh one (Reprobe) without its readers noticing; it records the
// registry's health from every request's outcome, and takes a slot of the
// shared FetchLimit for each stream. It is safe for concurrent use.
type Live struct {
	open  Opener
	limit *FetchLimit
	cur   atomic.Pointer[readerBox]
	// lastOK is the UnixNano time of the last successful request.
	lastOK atomic.Int64
	// mu guards lastErr and lastErrAt.
	mu        sync.Mutex
	lastErr   error
	lastErrAt time.Time
}

// readerBox holds an interface value for atomic.Pointer.
type readerBox struct{ r RangeReader }

// NewLive opens the blob with open (the first probe) and returns it ready
// for reads bounded by limit (nil: no common bound).
func NewLive(ctx context.Context, open Opener, limit *FetchLimit) (*Live, error) {
	r, err := open(ctx)
	if err != nil {
		return nil, err
	}
	l := &Live{open: open, limit: limit}
	l.swap(r)
	return l, nil
}

// Reprobe opens the blob again (a fresh probe, following redirects anew)
// and, if that works, puts the new connection under every later read. On
// failure the old connection stays and the failure counts in Health
// (unless ctx was cancelled).
func (l *Live) Reprobe(ctx context.Context) error {
	r, err := l.open(ctx)
	if err != nil {
		l.failed(err)
		return err
	}
	l.swap(r)
	return nil
}

// swap replaces the connection and counts its probe as contact.
func (l *Live) swap(r RangeReader) {
	l.cur.Store(&readerBox{r: r})
	l.lastOK.Store(time.Now().UnixNano())
	l.mu.Lock()
	l.lastErr = nil
	l.mu.Unlock()
}

// Health reports the last successful contact and the last failure after
// it.
func (l *Live) Health() Health {
	h := Health{LastContact: time.Unix(0, l.lastOK.Load())}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastErr != nil && l.lastErrAt.After(h.LastContact) {
		h.LastError = l.lastErr
	}
	return h
}

// FetchRange implements RangeReader: it waits for a slot of the shared
// limit, then streams [start, end) through the current connection. The
// slot is held until the stream is closed.
func (l *Live) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	release, err := l.limit.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rc, err := l.cur.Load().r.FetchRange(ctx, start, end)
	if err != nil {
		release()
		l.failed(err)
		return nil, err
	}
	l.lastOK.Store(time.Now().UnixNano())
	return &watchedStream{rc: rc, l: l, release: release}, nil
}

// failed records err unless the reader gave up (an interrupted read, a
// closed layer): only registry trouble should make a health check probe.
func (l *Live) failed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	l.mu.Lock()
	l.lastErr, l.lastErrAt = err, time.Now()
	l.mu.Unlock()
}

// watchedStream reports read failures of one range to its Live and frees
// its slot on Close.
type watchedStream struct {
	rc      io.ReadCloser
	l       *Live
	release func() // idempotent
}

func (s *watchedStream) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if err != nil && err != io.EOF {
		s.l.failed(fmt.Errorf("read blob range: %w", err))
	}
	return n, err
}

func (s *watchedStream) Close() error {
	defer s.release()
	return s.rc.Close()
}
