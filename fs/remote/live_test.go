package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// blobServer serves one blob at any path with range support; while down is
// set it answers 404 (a permanent status, so no retry hides it).
type blobServer struct {
	srv  *httptest.Server
	data []byte
	down atomic.Bool
	hits atomic.Int64
}

func newBlobServer(t *testing.T, data []byte) *blobServer {
	t.Helper()
	s := &blobServer{data: data}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "blob unknown", http.StatusNotFound)
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(s.data))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// ref names the served blob in repository "lib/app" of the server.
func (s *blobServer) ref() registry.Reference {
	return registry.Reference{Registry: strings.TrimPrefix(s.srv.URL, "http://"), Repository: "lib/app",
		Reference: digest.FromBytes(s.data).String()}
}

// opener returns an Opener that opens the blob of whichever server *cur
// points to when called, counting its calls in opens.
func opener(cur *atomic.Pointer[blobServer], opens *atomic.Int64) Opener {
	return func(ctx context.Context) (RangeReader, error) {
		opens.Add(1)
		s := cur.Load()
		opts := fastOpts()
		opts.MaxRetries = -1
		b, err := OpenReference(ctx, s.srv.Client(), s.ref(), opts)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}

func fetchAll(ctx context.Context, r RangeReader, start, end int64) ([]byte, error) {
	rc, err := r.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestLiveReprobeSwapsConnection: a registry failure shows in Health until
// a Reprobe succeeds; the reprobe opens the blob anew and later reads go to
// the new connection (here a different server, as after a re-resolved
// redirect), with the error cleared and the contact time advanced.
func TestLiveReprobeSwapsConnection(t *testing.T) {
	data := randBytes(7, 100<<10)
	a, b := newBlobServer(t, data), newBlobServer(t, data)
	var cur atomic.Pointer[blobServer]
	cur.Store(a)
	var opens atomic.Int64
	ctx := context.Background()
	before := time.Now()
	l, err := NewLive(ctx, opener(&cur, &opens), nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Health(); h.LastError != nil || h.LastContact.Before(before) {
		t.Fatalf("health after open = %+v, want a contact now and no error", h)
	}
	if got, err := fetchAll(ctx, l, 10, 5000); err != nil || !bytes.Equal(got, data[10:5000]) {
		t.Fatalf("read: %v", err)
	}

	a.down.Store(true)
	if _, err := fetchAll(ctx, l, 0, 100); !errors.Is(err, ErrStatus) {
		t.Fatalf("read from a failing registry: %v, want ErrStatus", err)
	}
	failedAt := l.Health()
	if !errors.Is(failedAt.LastError, ErrStatus) {
		t.Fatalf("health after a failed read: %+v, want the 404", failedAt)
	}
	if err := l.Reprobe(ctx); !errors.Is(err, ErrStatus) {
		t.Fatalf("reprobe of a failing registry: %v, want ErrStatus", err)
	}
	if h := l.Health(); h.LastError == nil || !h.LastContact.Equal(failedAt.LastContact) {
		t.Fatalf("health after a failed reprobe: %+v, want the error and the old contact", h)
	}

	cur.Store(b)
	if err := l.Reprobe(ctx); err != nil {
		t.Fatalf("reprobe: %v", err)
	}
	if h := l.Health(); h.LastError != nil || !h.LastContact.After(failedAt.LastContact) {
		t.Fatalf("health after a reprobe = %+v, want no error and a newer contact", h)
	}
	hitsA, hitsB := a.hits.Load(), b.hits.Load()
	if got, err := fetchAll(ctx, l, 0, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after reprobe: %v", err)
	}
	if a.hits.Load() != hitsA || b.hits.Load() != hitsB+1 {
		t.Fatalf("read after reprobe went to the old server (%d new requests there, %d to the new)",
			a.hits.Load()-hitsA, b.hits.Load()-hitsB)
	}
	if n := opens.Load(); n != 3 {
		t.Fatalf("blob opened %d times, want 3 (open, failed reprobe, reprobe)", n)
	}
}

// TestLiveOpenFails: a blob the registry does not have fails NewLive with
// the probe's error.
func TestLiveOpenFails(t *testing.T) {
	s := newBlobServer(t, randBytes(8, 1000))
	s.down.Store(true)
	var cur atomic.Pointer[blobServer]
	cur.Store(s)
	var opens atomic.Int64
	if _, err := NewLive(context.Background(), opener(&cur, &opens), nil); !errors.Is(err, ErrStatus) {
		t.Fatalf("NewLive of a missing blob: %v, want ErrStatus", err)
	}
}

// TestLiveCancelNotAFailure: a reader giving up (a cancelled context, before
// or during a stream, or during a reprobe) leaves Health clean; a
// registry failure right after is recorded.
func TestLiveCancelNotAFailure(t *testing.T) {
	data := randBytes(9, 64<<10)
	stall := make(chan struct{})
	var stalling atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if stalling.Load() {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(data[:100])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-stall:
			}
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	defer close(stall)
	ref := registry.Reference{Registry: strings.TrimPrefix(srv.URL, "http://"), Repository: "lib/app",
		Reference: digest.FromBytes(data).String()}
	open := func(ctx context.Context) (RangeReader, error) {
		b, err := OpenReference(ctx, srv.Client(), ref, fastOpts())
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	l, err := NewLive(context.Background(), open, nil)
	if err != nil {
		t.Fatal(err)
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.FetchRange(cancelled, 0, 10); err == nil {
		t.Fatal("fetch with a cancelled context succeeded")
	}
	if err := l.Reprobe(cancelled); err == nil {
		t.Fatal("reprobe with a cancelled context succeeded")
	}
	stalling.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := l.FetchRange(ctx, 0, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 50)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Fatalf("read of a stream whose reader gave up: %v, want context.Canceled", err)
	}
	rc.Close()
	if h := l.Health(); h.LastError != nil {
		t.Fatalf("health after cancelled reads = %v, want no error", h.LastError)
	}

	srv.Close()
	if _, err := fetchAll(context.Background(), l, 0, 10); err == nil {
		t.Fatal("read from a closed server succeeded")
	}
	if h := l.Health(); h.LastError == nil {
		t.Fatal("health after a registry failure shows no error")
	}
}

// TestFetchLimitHeldUntilClose: with a limit of one shared by two blobs, a
// second stream waits until the first is closed; closing twice frees one
// slot only; and a wait given up is no registry failure.
func TestFetchLimitHeldUntilClose(t *testing.T) {
	data := randBytes(10, 10<<10)
	s := newBlobServer(t, data)
	var cur atomic.Pointer[blobServer]
	cur.Store(s)
	var opens atomic.Int64
	limit := NewFetchLimit(1)
	ctx := context.Background()
	l1, err := NewLive(ctx, opener(&cur, &opens), limit)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := NewLive(ctx, opener(&cur, &opens), limit)
	if err != nil {
		t.Fatal(err)
	}
	first, err := l1.FetchRange(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(first); err != nil {
		t.Fatal(err)
	}
	// Read to the end but not closed: the slot is still taken.
	wait, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l2.FetchRange(wait, 0, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second stream while the first is open: %v, want to wait until the deadline", err)
	}
	if h := l2.Health(); h.LastError != nil {
		t.Fatalf("waiting for a slot counted as a registry failure: %v", h.LastError)
	}
	got := make(chan error, 1)
	go func() {
		_, err := fetchAll(ctx, l2, 0, 100)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second stream did not wait for the first to close (err %v)", err)
	case <-time.After(30 * time.Millisecond):
	}
	first.Close()
	first.Close() // a second Close must not free a second slot
	if err := <-got; err != nil {
		t.Fatalf("second stream after the first closed: %v", err)
	}
	a, err := l1.FetchRange(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	short, cancel2 := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel2()
	if _, err := l2.FetchRange(short, 0, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("two streams open under a limit of one after a double Close (err %v)", err)
	}
	if NewFetchLimit(0) != nil {
		t.Fatal("NewFetchLimit(0) bounds fetches; want no bound")
	}
}

// recordingDoer answers every request with a one-byte range of a 10-byte
// blob and records the URLs asked.
type recordingDoer struct{ urls []string }

func (d *recordingDoer) Do(req *http.Request) (*http.Response, error) {
	d.urls = append(d.urls, req.URL.String())
	return &http.Response{StatusCode: http.StatusPartialContent, Request: req, ContentLength: 1,
		Header: http.Header{"Content-Range": {"bytes 0-0/10"}}, Body: io.NopCloser(strings.NewReader("x"))}, nil
}

// TestOpenReferenceHost: the registry asked is the reference's Host, so
// the "docker.io" name reaches Docker Hub's API host, and other hosts are
// asked as named.
func TestOpenReferenceHost(t *testing.T) {
	dgst := digest.FromString("layer")
	for ref, want := range map[string]string{
		"docker.io/library/alpine:3":       "https://registry-1.docker.io/v2/library/alpine/blobs/" + dgst.String(),
		"ghcr.io/org/app@" + dgst.String(): "https://ghcr.io/v2/org/app/blobs/" + dgst.String(),
		"localhost:5000/app:1":             "https://localhost:5000/v2/app/blobs/" + dgst.String(),
	} {
		r, err := registry.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		r.Reference = dgst.String()
		d := &recordingDoer{}
		b, err := OpenReference(context.Background(), d, r, Options{Size: 10})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if b.URL() != want || len(d.urls) != 1 || d.urls[0] != want {
			t.Errorf("%s: blob URL %s, asked %v; want %s", ref, b.URL(), d.urls, want)
		}
	}
	if _, err := OpenReference(context.Background(), &recordingDoer{}, registry.Reference{Registry: "ghcr.io", Repository: "app", Reference: "latest"}, Options{}); err == nil {
		t.Fatal("a tag accepted as a blob digest")
	}
}
