package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
)

// BlobOpener opens ranged access to a layer blob. Mount calls it once per
// layer and Check again to re-resolve a broken connection, so OpenBlob
// should reach the registry (a probe) rather than return a cached handle.
// l.Size is set (from the label, or else the zTOC) when OpenBlob is called.
// RemoteBlobs is the implementation over fs/remote.
type BlobOpener interface {
	OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error)
}

// RemoteBlobs opens layer blobs with fs/remote: ranged HTTP reads from the
// image's repository, with the blob's size and redirect target probed on
// open.
type RemoteBlobs struct {
	// Client sends the requests; an *auth.Client (oras) handles
	// credentials. Required.
	Client remote.Doer
	// PlainHTTP says whether a registry host ("host:port") is reached over
	// plain HTTP; nil means HTTPS everywhere.
	PlainHTTP func(host string) bool
	// Options are the fetch knobs (timeouts, retries). Size and PlainHTTP
	// are set per blob.
	Options remote.Options
}

// OpenBlob implements BlobOpener.
func (r RemoteBlobs) OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error) {
	repo, err := l.Repository()
	if err != nil {
		return nil, err
	}
	host, path, _ := strings.Cut(repo, "/")
	if host == "docker.io" {
		// docker.io is a name, not a host: Docker Hub's API lives here.
		host = "registry-1.docker.io"
	}
	opts := r.Options
	opts.Size = l.Size
	opts.PlainHTTP = r.PlainHTTP != nil && r.PlainHTTP(host)
	return remote.Open(ctx, r.Client, host+"/"+path, l.LayerDigest, opts)
}

// liveBlob is the BlobReader a span manager reads through. Check can swap
// the blob underneath it (a re-resolved connection) without the manager
// noticing, and it records when the registry last answered and the last
// failure, so Check knows whether probing is needed.
type liveBlob struct {
	cur atomic.Pointer[blobBox]
	// sem, when not nil, bounds the open range streams of every layer
	// together; a stream holds one unit until closed.
	sem *semaphore.Weighted
	// lastOK is the UnixNano time of the last successful request.
	lastOK atomic.Int64
	// mu guards lastErr and lastErrAt.
	mu        sync.Mutex
	lastErr   error
	lastErrAt time.Time
}

// blobBox holds an interface value for atomic.Pointer.
type blobBox struct{ r span.BlobReader }

func newLiveBlob(r span.BlobReader, sem *semaphore.Weighted, now time.Time) *liveBlob {
	b := &liveBlob{sem: sem}
	b.swap(r, now)
	return b
}

// swap replaces the blob and counts the replacement's open as contact.
func (b *liveBlob) swap(r span.BlobReader, now time.Time) {
	b.cur.Store(&blobBox{r: r})
	b.lastOK.Store(now.UnixNano())
	b.mu.Lock()
	b.lastErr = nil
	b.mu.Unlock()
}

// FetchRange implements span.BlobReader, watching the outcome.
func (b *liveBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	release := func() {}
	if b.sem != nil {
		if err := b.sem.Acquire(ctx, 1); err != nil {
			return nil, fmt.Errorf("wait for a fetch slot: %w", err)
		}
		release = func() { b.sem.Release(1) }
	}
	rc, err := b.cur.Load().r.FetchRange(ctx, start, end)
	if err != nil {
		release()
		b.failed(err)
		return nil, err
	}
	b.lastOK.Store(time.Now().UnixNano())
	return &watchedStream{rc: rc, b: b, release: sync.OnceFunc(release)}, nil
}

// failed records err unless the reader gave up (an interrupted read, a
// closed layer): only registry trouble should make Check probe.
func (b *liveBlob) failed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	b.mu.Lock()
	b.lastErr, b.lastErrAt = err, time.Now()
	b.mu.Unlock()
}

// health reports the last successful contact and the last failure after
// it (nil if none).
func (b *liveBlob) health() (lastOK time.Time, lastErr error) {
	lastOK = time.Unix(0, b.lastOK.Load())
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastErr != nil && b.lastErrAt.After(lastOK) {
		return lastOK, b.lastErr
	}
	return lastOK, nil
}

// watchedStream reports read failures of one range to its liveBlob.
type watchedStream struct {
	rc      io.ReadCloser
	b       *liveBlob
	release func() // frees the fetch slot; idempotent
}

func (s *watchedStream) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if err != nil && err != io.EOF {
		s.b.failed(fmt.Errorf("read blob range: %w", err))
	}
	return n, err
}

func (s *watchedStream) Close() error {
	defer s.release()
	return s.rc.Close()
}
