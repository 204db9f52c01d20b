package span

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// BufferPool recycles span buffers among the Managers that share it: give
// every Manager of a daemon the same one (Options.Buffers), so a layer's
// first spans reuse memory another layer's reads released. Without reuse
// every span read allocates ~6 MiB (compressed and uncompressed) that the
// kernel must fault in and zero. Buffers are dropped at garbage collection,
// so an idle daemon holds none. The zero value is ready to use.
type BufferPool struct {
	data, comp bufPool
}

// NewBufferPool returns an empty BufferPool.
func NewBufferPool() *BufferPool { return &BufferPool{} }

// bufPool recycles span-sized buffers. Without it every span read
// allocates ~6 MiB (compressed and uncompressed) that the kernel must fault
// in and zero: about a fifth of a sequential read's CPU. A sync.Pool drops
// its buffers at garbage collection, so an idle layer holds none.
type bufPool struct{ p sync.Pool }

// get returns a buffer of n bytes. Its contents are stale: callers fill it
// before anyone reads it.
func (p *bufPool) get(n int64) []byte {
	if v, _ := p.p.Get().(*[]byte); v != nil && int64(cap(*v)) >= n && int64(cap(*v)) <= 2*n {
		return (*v)[:n]
	}
	// Headroom: spans of one layer differ in size by a few KiB.
	return make([]byte, n, n+n/16)
}

func (p *bufPool) put(b []byte) {
	if cap(b) > 0 {
		p.p.Put(&b)
	}
}

// spanBuf is a span's uncompressed bytes shared by the flight that
// produces them, the readers copying out of them and the hot list. Each
// holder has a reference; the last release returns the memory to the pool.
// Reusing memory early would serve one span's bytes as another's, so
// misuse panics rather than go unnoticed.
type spanBuf struct {
	b    []byte
	refs atomic.Int32
	pool *bufPool
}

// newSpanBuf returns a buffer of n bytes holding one reference.
func newSpanBuf(pool *bufPool, n int64) *spanBuf {
	s := &spanBuf{b: pool.get(n), pool: pool}
	s.refs.Store(1)
	return s
}

// retain adds a reference; the caller must already hold one (directly or
// through the holder it got the buffer from, under that holder's lock).
func (s *spanBuf) retain() *spanBuf {
	if n := s.refs.Add(1); n <= 1 {
		panic(fmt.Sprintf("span buffer retained with %d references", n-1))
	}
	return s
}

// release drops a reference.
func (s *spanBuf) release() {
	switch n := s.refs.Add(-1); {
	case n == 0:
		s.pool.put(s.b)
	case n < 0:
		panic("span buffer released more often than retained")
	}
}
