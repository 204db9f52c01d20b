package remote

// A fault-injecting proxy on 127.0.0.1 in front of an in-process blob
// server: each request is forwarded, and a fault may then replace or mangle
// the answer (reset mid-body, error status, truncated body, wrong
// Content-Range, stall, trickle, redirect).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fault may answer a request itself (returning true), given the answer up
// of the blob server behind the proxy. n counts the requests since the
// fault was set, from 1.
type fault func(n int64, w http.ResponseWriter, r *http.Request, up *http.Response) bool

// faultProxy forwards to an in-process blob server, through fault.
type faultProxy struct {
	data     []byte
	srv      *httptest.Server
	requests atomic.Int64
	fault    atomic.Pointer[fault]
}

func newFaultProxy(t *testing.T, data []byte) *faultProxy {
	t.Helper()
	up := httptest.NewServer(&quirky{data: data})
	t.Cleanup(up.Close)
	p := &faultProxy{data: data}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := p.requests.Add(1)
		req, err := http.NewRequestWithContext(r.Context(), r.Method, up.URL+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header.Set("Range", r.Header.Get("Range"))
		resp, err := up.Client().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if f := p.fault.Load(); f != nil && (*f)(n, w, r, resp) {
			return
		}
		copyAnswer(w, resp)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// set installs f (nil: none) and restarts the request count.
func (p *faultProxy) set(f fault) {
	if f == nil {
		p.fault.Store(nil)
	} else {
		p.fault.Store(&f)
	}
	p.requests.Store(0)
}

func (p *faultProxy) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// open opens the blob through the proxy (the probe is not faulted). The
// probe gets a generous rate window, so that a loaded machine cannot fail
// it; opts' limits apply to the reads.
func (p *faultProxy) open(t *testing.T, opts Options) *Blob {
	t.Helper()
	p.set(nil)
	opts.PlainHTTP = true
	probeOpts := opts
	probeOpts.RateWindow = 5 * time.Second
	b, err := Open(context.Background(), p.srv.Client(), p.host()+"/repo", digest.FromBytes(p.data), probeOpts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b.opts.RateWindow = opts.RateWindow
	return b
}

func copyAnswer(w http.ResponseWriter, resp *http.Response) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// headersAnd sends the blob server's headers, then n body bytes, flushed.
func headersAnd(w http.ResponseWriter, resp *http.Response, n int64) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.CopyN(w, resp.Body, n)
	w.(http.Flusher).Flush()
}

// resetAfter sends k body bytes, then cuts the connection.
func resetAfter(k int64) fault {
	return func(_ int64, w http.ResponseWriter, _ *http.Request, up *http.Response) bool {
		headersAnd(w, up, k)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return true
	}
}

// truncated sends half the body after a Content-Length for all of it; the
// server then closes the connection.
func truncated(_ int64, w http.ResponseWriter, _ *http.Request, up *http.Response) bool {
	headersAnd(w, up, up.ContentLength/2)
	return true
}

func status(code int, retryAfter string) fault {
	return func(_ int64, w http.ResponseWriter, _ *http.Request, _ *http.Response) bool {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, "no", code)
		return true
	}
}

// stall sends one byte, then nothing until the client gives up.
func stall(_ int64, w http.ResponseWriter, r *http.Request, up *http.Response) bool {
	headersAnd(w, up, 1)
	<-r.Context().Done()
	return true
}

// trickle sends one byte every 20 ms.
func trickle(_ int64, w http.ResponseWriter, r *http.Request, up *http.Response) bool {
	headersAnd(w, up, 1)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return true
		case <-t.C:
			if _, err := io.CopyN(w, up.Body, 1); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
		}
	}
}

// firstN applies f to the first n requests only.
func firstN(n int64, f fault) fault {
	return func(i int64, w http.ResponseWriter, r *http.Request, up *http.Response) bool {
		return i <= n && f(i, w, r, up)
	}
}

// faultOpts are small limits, so that failures come fast; the bounds
// asserted are generous multiples of them. Tests whose reads must succeed
// widen the window (okWindow), so that a pause of a loaded machine cannot
// pass for a stall.
func faultOpts(maxRetries int) Options {
	if maxRetries == 0 {
		maxRetries = -1 // Options' zero is "default"
	}
	return Options{MaxRetries: maxRetries, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		RequestTimeout: 5 * time.Second, MinRate: 64 << 10, RateWindow: 200 * time.Millisecond}
}

const okWindow = time.Second

// readAll reads [start, end) and checks that whatever arrived, error or
// not, is the blob's bytes: no fault may yield corrupt data.
func readAll(t *testing.T, ctx context.Context, b *Blob, data []byte, start, end int64) (int, error) {
	t.Helper()
	rc, err := b.FetchRange(ctx, start, end)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !bytes.Equal(got, data[start:start+int64(len(got))]) {
		t.Fatalf("read returned %d bytes that differ from the blob", len(got))
	}
	if err == nil && len(got) != int(end-start) {
		t.Fatalf("read returned %d bytes without error, want %d", len(got), end-start)
	}
	return len(got), err
}

// TestRetryBudgetExact: whatever the failure, and whether each attempt
// makes progress or not, one range costs exactly 1 + max_retries requests
// before the read fails.
func TestRetryBudgetExact(t *testing.T) {
	data := randBytes(20, 200_000)
	p := newFaultProxy(t, data)
	faults := map[string]fault{
		"503":                 status(503, ""),
		"500":                 status(500, ""),
		"reset after 1000 B":  resetAfter(1000),
		"reset before a byte": resetAfter(0),
		"truncated":           truncated,
		"stall after 1 B":     stall,
		"trickle":             trickle,
	}
	for name, f := range faults {
		for _, m := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("%s/max_retries=%d", name, m), func(t *testing.T) {
				b := p.open(t, faultOpts(m))
				p.set(f)
				start := time.Now()
				_, err := readAll(t, context.Background(), b, data, 100, 150_100)
				if err == nil {
					t.Fatal("read succeeded against a failing server")
				}
				if n := p.requests.Load(); n != int64(1+m) {
					t.Fatalf("%d requests, want %d: %v", n, 1+m, err)
				}
				// Bound: (1+m) attempts of at most one 200 ms window each
				// (a trickle may need a second one), plus backoffs of at
				// most 25 ms: under 2 s; 10 s leaves room for a loaded host.
				if d := time.Since(start); d > 10*time.Second {
					t.Fatalf("failure took %v", d)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("attempt %d of %d", 1+m, 1+m)) {
					t.Fatalf("error does not count attempts: %v", err)
				}
			})
		}
	}
}

// TestFaultsRecovered: one bad answer of each kind, then good ones: the
// read returns exactly the blob's bytes after one retry.
func TestFaultsRecovered(t *testing.T) {
	data := randBytes(21, 300_000)
	p := newFaultProxy(t, data)
	for name, f := range map[string]fault{
		"reset mid-body": resetAfter(70_000),
		"500":            status(500, ""),
		"503":            status(503, ""),
		"429":            status(429, ""),
		"truncated":      truncated,
		"stall":          stall,
		"trickle":        trickle,
	} {
		t.Run(name, func(t *testing.T) {
			opts := faultOpts(1)
			opts.RateWindow = okWindow
			b := p.open(t, opts)
			p.set(firstN(1, f))
			if _, err := readAll(t, context.Background(), b, data, 10, 250_010); err != nil {
				t.Fatalf("read: %v", err)
			}
			if n := p.requests.Load(); n != 2 {
				t.Fatalf("%d requests, want 2", n)
			}
		})
	}
}

// TestRetryAfter: a 429 or 503 with Retry-After waits what it asks
// (seconds or a date), capped by MaxRetryAfter.
func TestRetryAfter(t *testing.T) {
	data := randBytes(22, 10_000)
	p := newFaultProxy(t, data)
	cases := []struct {
		name       string
		code       int
		retryAfter string
		cap        time.Duration
		min, max   time.Duration
	}{
		{"429 seconds", 429, "1", 0, 900 * time.Millisecond, 8 * time.Second},
		{"503 date", 503, "date+2s", 0, 500 * time.Millisecond, 8 * time.Second},
		{"429 capped", 429, "3600", 300 * time.Millisecond, 250 * time.Millisecond, 5 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := faultOpts(1)
			opts.MaxRetryAfter, opts.RateWindow = c.cap, okWindow
			b := p.open(t, opts)
			if c.retryAfter == "date+2s" {
				// At least a second ahead once truncated to the second.
				c.retryAfter = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
			}
			p.set(firstN(1, status(c.code, c.retryAfter)))
			start := time.Now()
			if _, err := readAll(t, context.Background(), b, data, 0, 10_000); err != nil {
				t.Fatalf("read: %v", err)
			}
			if d := time.Since(start); d < c.min || d > c.max {
				t.Fatalf("read took %v, want between %v and %v", d, c.min, c.max)
			}
		})
	}
}

// TestCancelStopsBackoff: cancelling the read's context ends a long
// Retry-After wait at once.
func TestCancelStopsBackoff(t *testing.T) {
	data := randBytes(23, 10_000)
	p := newFaultProxy(t, data)
	b := p.open(t, faultOpts(3))
	p.set(status(503, "10"))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := readAll(t, ctx, b, data, 0, 10_000)
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("read: %v, want cancelled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %v to end a 10 s wait", d)
	}
}

// TestWrongContentRangeNotRetried: an answer for other bytes than asked is
// refused before any byte is returned.
func TestWrongContentRangeNotRetried(t *testing.T) {
	data := randBytes(24, 10_000)
	p := newFaultProxy(t, data)
	b := p.open(t, faultOpts(3))
	p.set(func(_ int64, w http.ResponseWriter, _ *http.Request, _ *http.Response) bool {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 1001-2000/%d", len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[1001:2001])
		return true
	})
	n, err := readAll(t, context.Background(), b, data, 1000, 2000)
	if err == nil || n != 0 {
		t.Fatalf("shifted Content-Range: %d bytes, %v", n, err)
	}
	if !strings.Contains(err.Error(), "Content-Range") {
		t.Fatalf("error does not name the problem: %v", err)
	}
	if c := p.requests.Load(); c != 1 {
		t.Fatalf("%d requests, want 1 (a protocol violation is not retried)", c)
	}
}

// TestAttemptTimeoutWithoutMinRate: with no minimum rate, RequestTimeout
// still ends a stalled attempt.
func TestAttemptTimeoutWithoutMinRate(t *testing.T) {
	data := randBytes(25, 10_000)
	p := newFaultProxy(t, data)
	opts := faultOpts(1)
	opts.MinRate, opts.RequestTimeout = -1, 300*time.Millisecond
	b := p.open(t, opts)
	p.set(stall)
	start := time.Now()
	_, err := readAll(t, context.Background(), b, data, 0, 10_000)
	if err == nil || !strings.Contains(err.Error(), "request timed out after 300ms") {
		t.Fatalf("read: %v, want an attempt timeout", err)
	}
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("failure took %v", d)
	}
}
