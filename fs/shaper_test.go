package fs

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// shapedLink is a TCP proxy on 127.0.0.1 in front of a registry that
// emulates a slower link: every byte towards the client, over all
// connections together, passes one token bucket (the link's bandwidth),
// and every byte towards the registry is held for the round-trip time
// first, so each request's answer starts one RTT later. Enough for the
// benchmarks of this package; integration/harness has a fuller one.
type shapedLink struct {
	// Host is "127.0.0.1:<port>" of the proxy.
	Host string

	ln      net.Listener
	target  string
	limiter *rate.Limiter
	rtt     time.Duration
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

// shapedPiece is the most bytes sent towards the client at once: at 100
// Mbit/s, 1.3 ms of the link.
const shapedPiece = 16 << 10

// startShapedLink starts a proxy to target passing bitsPerSecond with the
// given round-trip time; it stops when the test ends.
func startShapedLink(t testing.TB, target string, bitsPerSecond float64, rtt time.Duration) *shapedLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &shapedLink{Host: ln.Addr().String(), ln: ln, target: target, rtt: rtt, conns: map[net.Conn]struct{}{},
		limiter: rate.NewLimiter(rate.Limit(bitsPerSecond/8), 2*shapedPiece)}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

func (l *shapedLink) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serve(c)
		}()
	}
}

// track records c so close can end it; false once the proxy is closing.
func (l *shapedLink) track(c net.Conn, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

func (l *shapedLink) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", l.target)
	if err != nil {
		return
	}
	defer server.Close()
	l.track(client, true)
	l.track(server, true)
	defer l.track(client, false)
	defer l.track(server, false)
	done := make(chan struct{})
	go func() { // requests: small, each held for the round trip
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				time.Sleep(l.rtt)
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = server.(*net.TCPConn).CloseWrite()
				return
			}
		}
	}()
	buf := make([]byte, shapedPiece)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if werr := l.limiter.WaitN(context.Background(), n); werr != nil {
				break
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				break
			}
			_ = client.(*net.TCPConn).CloseWrite()
			break
		}
	}
	client.Close()
	<-done
}

// close stops accepting, ends every connection and waits.
func (l *shapedLink) close() {
	l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
