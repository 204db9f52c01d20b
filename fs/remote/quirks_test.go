package remote

// Registry quirks that no real registry process can be made to show on
// demand (failing answers, resets, redirects to storage, ignored Range
// headers) are modelled with httptest servers here.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// quirky serves one blob with range support, after letting fault decide
// whether to misbehave on each request.
type quirky struct {
	data  []byte
	calls atomic.Int64
	fault func(n int64, w http.ResponseWriter, r *http.Request) bool
}

func (q *quirky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := q.calls.Add(1)
	if q.fault != nil && q.fault(n, w, r) {
		return
	}
	http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(q.data))
}

func openQuirky(t *testing.T, q *quirky) *Blob {
	t.Helper()
	srv := httptest.NewServer(q)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	b, err := Open(context.Background(), srv.Client(), host+"/repo", digest.FromBytes(q.data), fastOpts())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return b
}

func TestRetriesTransientStatus(t *testing.T) {
	data := randBytes(4, 100_000)
	for _, code := range []int{500, 502, 503, 429, 408} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			q := &quirky{data: data}
			b := openQuirky(t, q)
			q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
				if n <= 3 { // the probe was call 1; fail the next two
					http.Error(w, "busy", code)
					return true
				}
				return false
			}
			q.calls.Store(1)
			got, err := readRange(context.Background(), b, 10, 90_000)
			if err != nil || !bytes.Equal(got, data[10:90_000]) {
				t.Fatalf("read: %v", err)
			}
			if c := q.calls.Load(); c != 4 {
				t.Fatalf("%d calls, want 4 (2 failures + success after the probe)", c)
			}
		})
	}
}

func TestPermanentStatusNotRetried(t *testing.T) {
	q := &quirky{data: randBytes(5, 1000)}
	b := openQuirky(t, q)
	q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, "<html>"+strings.Repeat("login page ", 10_000)+"</html>")
		return true
	}
	_, err := readRange(context.Background(), b, 0, 10)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 403 || len(se.Body) > maxErrorBody {
		t.Fatalf("403: %v", err)
	}
	if c := q.calls.Load(); c != 2 {
		t.Fatalf("%d calls, want 2 (probe + one)", c)
	}
	if _, err := readRange(context.Background(), b, 0, 10); !strings.Contains(fmt.Sprint(err), "Forbidden") {
		t.Fatalf("error does not say what happened: %v", err)
	}
}

// TestResumeAfterReset cuts every body after 10 000 bytes; the stream
// re-requests the rest each time and delivers the exact bytes. The 40 000
// byte range takes 4 requests, all of fastOpts' budget (1 + 3 retries).
func TestResumeAfterReset(t *testing.T) {
	data := randBytes(6, 50_000)
	q := &quirky{data: data}
	b := openQuirky(t, q)
	q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		var first, last int64
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last); err != nil {
			return false
		}
		cut := min(last+1, first+10_000)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[first:cut])
		if cut <= last {
			// Abort the connection mid-body.
			hj, _ := w.(http.Hijacker)
			w.(http.Flusher).Flush()
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
		}
		return true
	}
	got, err := readRange(context.Background(), b, 5, 40_005)
	if err != nil || !bytes.Equal(got, data[5:40_005]) {
		t.Fatalf("read across resets: %v (%d bytes)", err, len(got))
	}
	if fetched := b.FetchedBytes(); fetched != 40_000 {
		t.Fatalf("fetched %d bytes, want %d (no byte twice)", fetched, 40_000)
	}
}

func TestGiveUpAfterRetries(t *testing.T) {
	q := &quirky{data: randBytes(7, 1000)}
	b := openQuirky(t, q)
	q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	start := time.Now()
	_, err := readRange(context.Background(), b, 0, 10)
	if !errors.Is(err, ErrStatus) {
		t.Fatalf("read: %v", err)
	}
	if c := q.calls.Load(); c != 1+1+3 {
		t.Fatalf("%d calls, want probe + 1 + 3 retries", c)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("gave up after %v", time.Since(start))
	}
}

// TestRedirectCached: the registry redirects to storage; later reads go to
// storage directly until it refuses (an expired signature), then the
// registry is asked again.
func TestRedirectCached(t *testing.T) {
	data := randBytes(8, 20_000)
	storage := &quirky{data: data}
	st := httptest.NewServer(storage)
	defer st.Close()
	var regCalls atomic.Int64
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		regCalls.Add(1)
		http.Redirect(w, r, st.URL+"/bucket/blob?sig=secret", http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	b, err := Open(context.Background(), http.DefaultClient, host+"/repo", digest.FromBytes(data), fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := readRange(context.Background(), b, 100, 200); err != nil || !bytes.Equal(got, data[100:200]) {
			t.Fatalf("read: %v", err)
		}
	}
	if c := regCalls.Load(); c != 1 {
		t.Fatalf("registry asked %d times, want once (the probe)", c)
	}
	storage.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		if n == 5 { // probe + 3 reads were 1..4
			http.Error(w, "<Error>expired</Error>", http.StatusForbidden)
			return true
		}
		return false
	}
	if got, err := readRange(context.Background(), b, 0, 50); err != nil || !bytes.Equal(got, data[:50]) {
		t.Fatalf("read after expiry: %v", err)
	}
	if c := regCalls.Load(); c != 2 {
		t.Fatalf("registry asked %d times, want 2", c)
	}
}

// TestIgnoredRange: a server answering 200 with the whole blob is usable
// near the start (bytes skipped) and refused far into the blob.
func TestIgnoredRange(t *testing.T) {
	data := randBytes(9, 3<<20)
	q := &quirky{data: data}
	b := openQuirky(t, q)
	q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data)
		return true
	}
	if got, err := readRange(context.Background(), b, 1000, 5000); err != nil || !bytes.Equal(got, data[1000:5000]) {
		t.Fatalf("near range: %v", err)
	}
	if _, err := readRange(context.Background(), b, 2<<20, 2<<20+10); !errors.Is(err, ErrRangeUnsupported) {
		t.Fatalf("far range: %v", err)
	}
}

func TestWrongContentRange(t *testing.T) {
	data := randBytes(10, 1000)
	q := &quirky{data: data}
	b := openQuirky(t, q)
	q.fault = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Range", "bytes 0-9/1000")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:10])
		return true
	}
	if _, err := readRange(context.Background(), b, 500, 510); !errors.Is(err, errBadRange) {
		t.Fatalf("mismatched Content-Range: %v", err)
	}
}
