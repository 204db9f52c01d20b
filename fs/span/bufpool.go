package span

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of a BufferPool's bounds.
const (
	// DefaultPoolBytes bounds the free buffers a BufferPool keeps: enough
	// for the flights of a sequential reader to reuse the buffers of the
	// spans it left behind (a few 4 MiB spans and their ~1 MiB compressed
	// bytes), no more.
	DefaultPoolBytes int64 = 32 << 20
	// DefaultPoolIdle is how long a BufferPool keeps free buffers after the
	// last span was fetched. Readers that pause for longer start again with
	// fresh allocations, which costs a little CPU; a daemon holding tens of
	// megabytes while no container reads costs every other process on the
	// node.
	DefaultPoolIdle = 3 * time.Second
)

// BufferPool recycles span buffers among the Managers that share it: give
// every Manager of a daemon the same one (Options.Buffers), so a layer's
// first spans reuse memory another layer's reads released. Without reuse
// every span read allocates ~5 MiB (compressed and uncompressed) that the
// kernel must fault in and zero. The free buffers it keeps are bounded in
// bytes, and all are dropped once no span was fetched for a few seconds, so
// an idle daemon holds none. The zero value is ready to use, with the
// default bounds.
type BufferPool struct {
	p bufPool
}

// NewBufferPool returns an empty BufferPool with the default bounds
// (DefaultPoolBytes, DefaultPoolIdle).
func NewBufferPool() *BufferPool { return &BufferPool{} }

// NewBoundedBufferPool returns an empty BufferPool that keeps at most
// maxBytes of free buffers and drops them idle after the last span fetch;
// zero values take the defaults, a negative maxBytes keeps nothing.
func NewBoundedBufferPool(maxBytes int64, idle time.Duration) *BufferPool {
	return &BufferPool{p: bufPool{maxBytes: maxBytes, idle: idle}}
}

// FreeBytes returns the bytes of free buffers the pool holds now.
func (p *BufferPool) FreeBytes() int64 {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	return p.p.bytes
}

// bufPool is a byte-bounded free list of span-sized buffers. A sync.Pool
// was used first; it lost its buffers at every collection (so a busy
// reader re-allocated them anyway) and kept them for as long as no
// collection ran (so an idle daemon, which allocates nothing, kept them for
// minutes). The buffers live outside the Go heap (allocBuffer): their
// lifetime is already tracked exactly, by spanBuf's references and by the
// flights that own compressed buffers.
type bufPool struct {
	maxBytes int64         // 0: DefaultPoolBytes; negative: keep nothing
	idle     time.Duration // 0: DefaultPoolIdle

	// mu guards the fields below.
	mu      sync.Mutex
	free    [][]byte // capacities vary: compressed and uncompressed spans
	bytes   int64    // sum of cap(free[i])
	lastGet time.Time
	timer   *time.Timer
}

func (p *bufPool) limits() (int64, time.Duration) {
	maxBytes, idle := p.maxBytes, p.idle
	if maxBytes == 0 {
		maxBytes = DefaultPoolBytes
	}
	if idle <= 0 {
		idle = DefaultPoolIdle
	}
	return maxBytes, idle
}

// get returns a buffer of n bytes. Its contents are stale: callers fill it
// before anyone reads it. The smallest free buffer that fits is taken, so
// compressed-size requests do not take uncompressed-size buffers.
func (p *bufPool) get(n int64) []byte {
	p.mu.Lock()
	p.lastGet = time.Now()
	best := -1
	for i, b := range p.free {
		if c := int64(cap(b)); c >= n && c <= 2*n && (best < 0 || c < int64(cap(p.free[best]))) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		p.free = slices.Delete(p.free, best, best+1)
		p.bytes -= int64(cap(b))
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	// Headroom: spans of one layer differ in size by a few KiB.
	return allocBuffer(n, n+n/16)
}

// put returns b to the pool, or unmaps it when the pool is full (dropping
// its smallest buffers first, which are the cheapest to allocate again).
func (p *bufPool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	maxBytes, idle := p.limits()
	p.mu.Lock()
	defer p.mu.Unlock()
	if int64(cap(b)) > maxBytes {
		freeBuffer(b)
		return
	}
	p.free = append(p.free, b[:0])
	p.bytes += int64(cap(b))
	if p.bytes > maxBytes {
		slices.SortFunc(p.free, func(x, y []byte) int { return cap(y) - cap(x) })
		for p.bytes > maxBytes {
			last := len(p.free) - 1
			p.bytes -= int64(cap(p.free[last]))
			freeBuffer(p.free[last])
			p.free[last] = nil
			p.free = p.free[:last]
		}
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(idle, p.trim)
	}
}

// trim drops every free buffer once no buffer was taken for the idle
// period, and re-arms otherwise. The buffers are unmapped (allocBuffer), so
// their pages go back to the OS at once.
func (p *bufPool) trim() {
	_, idle := p.limits()
	p.mu.Lock()
	if wait := idle - time.Since(p.lastGet); wait > 0 {
		p.timer.Reset(wait)
		p.mu.Unlock()
		return
	}
	for _, b := range p.free {
		freeBuffer(b)
	}
	clear(p.free)
	p.free, p.bytes, p.timer = nil, 0, nil
	p.mu.Unlock()
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

// allocBuffer returns a buffer of n bytes and capacity at least c, mapped
// anonymously outside the Go heap. Span buffers are megabytes each and
// their lifetime is known exactly, so the garbage collector gains nothing
// from managing them and costs much: with GOGC at 100 the heap is allowed
// to grow to twice what is live, so every buffer in use let as much garbage
// accumulate again (measured: 123 MB peak daemon RSS reading a 20k-file
// layer, against 93 MB with GOGC=25), and freed buffers were returned to
// the OS only by the runtime's slow scavenger. A mapped buffer's pages are
// returned when it is unmapped. If the mapping fails (an address space
// limit), the buffer comes from the heap, and freeBuffer leaves it to the
// collector.
func allocBuffer(n, c int64) []byte {
	size := (c + pageSize - 1) &^ (pageSize - 1)
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n, c)
	}
	return b[:n]
}

// freeBuffer unmaps a buffer from allocBuffer. Nothing may use b, or a
// slice of it, afterwards: the spanBuf references and the flight's
// ownership of its compressed buffer guarantee that. A heap buffer (the
// fallback of allocBuffer) is not a mapping, and Munmap refuses it
// harmlessly.
func freeBuffer(b []byte) {
	if cap(b) == 0 {
		return
	}
	_ = unix.Munmap(b[:cap(b)])
}

// pageSize is the unit buffers are mapped in.
const pageSize = 4096
