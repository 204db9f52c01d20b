package harness

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// startSource serves size bytes to every connection, or echoes what it
// reads when size is 0; the listener closes at the test's end.
func startSource(t *testing.T, size int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if size == 0 {
					_, _ = io.Copy(c, c)
					return
				}
				_, _ = c.Write(bytes.Repeat([]byte{'x'}, size))
			}()
		}
	}()
	return l.Addr().String()
}

// download reads everything host sends and returns how many bytes came.
func download(t *testing.T, host string) int64 {
	t.Helper()
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Error(err)
	}
	return n
}

// TestShaperRate: a long transfer through the shaper arrives no faster
// than its bandwidth, and two transfers at once share it (together no
// faster than the bandwidth either). Only lower bounds are asserted, with
// a margin for the bucket's burst: a loaded machine can only make the
// transfer slower.
func TestShaperRate(t *testing.T) {
	const size = 2 << 20
	const rate = 8 << 20 // bytes per second: 2 MiB takes 250 ms
	sh, err := StartShaperIn(ScopeOf(t), startSource(t, size), LinkShape{BytesPerSecond: rate})
	if err != nil {
		t.Fatal(err)
	}
	minimum := time.Duration(float64(size-2*shaperBurst) / rate * float64(time.Second))

	start := time.Now()
	if n := download(t, sh.Host); n != size {
		t.Fatalf("received %d bytes through the shaper, want %d", n, size)
	}
	if took := time.Since(start); took < minimum {
		t.Errorf("%d bytes at %d B/s arrived in %v, want at least %v", size, rate, took, minimum)
	} else {
		t.Logf("%d bytes at %d B/s: %v (%.1f MB/s)", size, rate, took, float64(size)/took.Seconds()/1e6)
	}

	start = time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); download(t, sh.Host) }()
	}
	wg.Wait()
	if took, want := time.Since(start), 2*minimum; took < want {
		t.Errorf("two transfers of %d bytes at %d B/s shared took %v, want at least %v", size, rate, took, want)
	}
}

// TestShaperDelay: every round trip through the shaper takes at least
// twice the one-way delay, on a link whose bandwidth is not the limit.
func TestShaperDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	sh, err := StartShaperIn(ScopeOf(t), startSource(t, 0), LinkShape{BytesPerSecond: 100 << 20, Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", sh.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	for i := range 5 {
		start := time.Now()
		if _, err := c.Write([]byte("ping!")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 2*delay {
			t.Errorf("round trip %d took %v, want at least %v (2 × %v)", i, rtt, 2*delay, delay)
		}
	}
}

// TestShaperClose: closing the shaper ends open connections, so a client
// waiting on a slow transfer sees its end instead of hanging.
func TestShaperClose(t *testing.T) {
	sh, err := StartShaperIn(Scope{Defer: func(func()) {}, Logf: t.Logf, Failed: t.Failed},
		startSource(t, 64<<20), LinkShape{BytesPerSecond: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int64)
	go func() {
		c, err := net.Dial("tcp", sh.Host)
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	time.Sleep(100 * time.Millisecond)
	sh.Close()
	select {
	case n := <-done:
		if n >= 64<<20 {
			t.Errorf("the whole 64 MiB arrived at 1 MiB/s before the close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still reading 10 s after the shaper closed")
	}
}
