package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// LinkShape is an emulated network link: a bandwidth shared by every
// connection, in each direction, and a one-way delay added to every byte.
// The kernel here has no netem, so the shaping happens in a TCP proxy.
type LinkShape struct {
	// BytesPerSecond is the bandwidth of each direction; 0: unbounded.
	BytesPerSecond float64
	// Delay is the one-way delay of each direction (half the round trip).
	Delay time.Duration
}

// Link100Mbit20ms is the emulated link: 100 Mbit/s and a 20 ms
// round trip.
var Link100Mbit20ms = LinkShape{BytesPerSecond: 100e6 / 8, Delay: 10 * time.Millisecond}

// String describes the shape for messages and reports.
func (s LinkShape) String() string {
	return fmt.Sprintf("%.0f Mbit/s, %v RTT", s.BytesPerSecond*8/1e6, 2*s.Delay)
}

// Shaper is a TCP proxy on 127.0.0.1 that forwards to a target address
// through an emulated link: bytes of all connections share one token bucket
// per direction (the link's bandwidth), then wait in a delay line (the
// propagation delay), so a round trip costs 2×Delay and a long transfer
// arrives no faster than the bandwidth, as on a real link.
type Shaper struct {
	// Host is the proxy's "127.0.0.1:<port>".
	Host string

	target   string
	shape    LinkShape
	up, down *tokenBucket
	l        net.Listener
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// shaperChunk is the most bytes moved as one unit through the bucket and
// the delay line: small against the bandwidth-delay product, so the rate is
// smooth, and large enough to keep the per-chunk cost low.
const shaperChunk = 16 << 10

// shaperBurst is the token bucket's depth: the most bytes sent at once
// after an idle time. It also absorbs timer overshoot, so sleeping late
// does not lower the rate.
const shaperBurst = 64 << 10

// StartShaperIn starts a shaping proxy for target (host:port) on a free
// port of 127.0.0.1; s.Defer holds its close.
func StartShaperIn(s Scope, target string, shape LinkShape) (*Shaper, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("shaper listen: %w", err)
	}
	sh := &Shaper{
		Host: l.Addr().String(), target: target, shape: shape, l: l,
		up:    newTokenBucket(shape.BytesPerSecond, shaperBurst),
		down:  newTokenBucket(shape.BytesPerSecond, shaperBurst),
		conns: map[net.Conn]struct{}{},
	}
	sh.wg.Add(1)
	go sh.accept()
	s.Defer(sh.Close)
	return sh, nil
}

// Close stops accepting, closes every open connection and waits for the
// proxy's goroutines.
func (sh *Shaper) Close() {
	_ = sh.l.Close()
	sh.mu.Lock()
	sh.closed = true
	for c := range sh.conns {
		_ = c.Close()
	}
	sh.mu.Unlock()
	sh.wg.Wait()
}

func (sh *Shaper) accept() {
	defer sh.wg.Done()
	for {
		c, err := sh.l.Accept()
		if err != nil {
			return // closed
		}
		sh.wg.Add(1)
		go sh.serve(c)
	}
}

// track adds c to the open connections, which Close closes; it reports
// false when the shaper is closing and c must not be used.
func (sh *Shaper) track(c net.Conn) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.closed {
		return false
	}
	sh.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (sh *Shaper) untrack(c net.Conn) {
	sh.mu.Lock()
	delete(sh.conns, c)
	sh.mu.Unlock()
	_ = c.Close()
}

// serve connects one client to the target and pumps both directions
// through the link until both are done.
func (sh *Shaper) serve(client net.Conn) {
	defer sh.wg.Done()
	defer sh.untrack(client)
	if !sh.track(client) {
		return
	}
	server, err := net.Dial("tcp", sh.target)
	if err != nil {
		return
	}
	defer sh.untrack(server)
	if !sh.track(server) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sh.pipe(server, client, sh.up) }()
	go func() { defer wg.Done(); sh.pipe(client, server, sh.down) }()
	wg.Wait()
}

// delayed is one chunk in the delay line and when it may be delivered.
type delayed struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst through bucket and the delay line. At src's end
// it half-closes dst, so request/response protocols see the end; on an
// error both sides are closed, which ends the other direction too.
func (sh *Shaper) pipe(dst, src net.Conn, bucket *tokenBucket) {
	// The line holds at most 64 chunks (1 MiB): more than the link's
	// bandwidth-delay product, so the line never limits the rate, while a
	// slow reader still pushes back on the sender through TCP.
	line := make(chan delayed, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range line {
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				_ = src.Close()
				for range line { // drain so the reader is not stuck
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	for {
		buf := make([]byte, shaperChunk)
		n, err := src.Read(buf)
		if n > 0 {
			if wait := bucket.take(n); wait > 0 {
				time.Sleep(wait)
			}
			line <- delayed{data: buf[:n], at: time.Now().Add(sh.shape.Delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			break
		}
	}
	close(line)
	<-done
}

// tokenBucket paces bytes at rate per second with a depth of burst bytes.
// take reserves tokens and says how long to wait for them, so concurrent
// takers queue behind each other: the rate is shared, not per taker.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0: unbounded
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// take reserves n bytes and returns how long the caller must wait before
// sending them.
func (b *tokenBucket) take(n int) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
