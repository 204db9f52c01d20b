package harness

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CountingProxy is a reverse proxy in front of a registry that counts the
// blob bytes it serves, so tests can tell how much of an image was fetched
// and by whom it was asked for.
type CountingProxy struct {
	// Host is the proxy's "127.0.0.1:<port>"; image references use it in
	// place of the registry's host.
	Host string

	blobBytes    atomic.Int64
	blobRequests atomic.Int64
	server       *http.Server

	mu   sync.Mutex
	gets []*BlobGet
}

// BlobGet is one blob GET the proxy answered: which blob, which part, who
// asked, and how many bytes went through. Tests use it to tell the
// daemon's range reads from a client downloading whole layers.
type BlobGet struct {
	// Digest is the blob's digest, from the URL path.
	Digest string
	// Range is the request's Range header ("" for the whole blob).
	Range string
	// UserAgent is the client's User-Agent header.
	UserAgent string
	// Start is when the registry's response headers reached the proxy.
	Start time.Time

	n    atomic.Int64
	last atomic.Int64 // unix nanoseconds of the last body read
}

// End returns when the last body bytes of this GET went through so far
// (Start when none have).
func (g *BlobGet) End() time.Time {
	if ns := g.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return g.Start
}

// Bytes returns the bytes served for this GET so far.
func (g *BlobGet) Bytes() int64 { return g.n.Load() }

// String describes the GET for messages.
func (g *BlobGet) String() string {
	r := g.Range
	if r == "" {
		r = "whole blob"
	}
	return fmt.Sprintf("%s (%s) %d bytes by %q", g.Digest, r, g.Bytes(), g.UserAgent)
}

// StartCountingProxy starts a proxy for the registry at target (host:port)
// on a free port of 127.0.0.1; t.Cleanup closes it.
func StartCountingProxy(t T, target string) *CountingProxy {
	t.Helper()
	p, err := StartCountingProxyIn(ScopeOf(t), target)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// StartCountingProxyIn starts a proxy for the registry at target
// (host:port) on a free port of 127.0.0.1; s.Defer holds its close.
func StartCountingProxyIn(s Scope, target string) (*CountingProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &CountingProxy{Host: l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	// Registries answer with absolute Location headers naming their own
	// host; rewrite them so clients keep talking through the proxy.
	rp.ModifyResponse = p.observe(target)
	p.server = &http.Server{Handler: rp}
	go func() { _ = p.server.Serve(l) }()
	s.Defer(func() { _ = p.server.Close() })
	return p, nil
}

// observe returns the reverse proxy's response hook: it points Location
// headers at the proxy and counts blob GETs and their bytes.
func (p *CountingProxy) observe(target string) func(*http.Response) error {
	return func(resp *http.Response) error {
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Header.Set("Location", strings.Replace(loc, "//"+target, "//"+p.Host, 1))
		}
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") {
			p.blobRequests.Add(1)
			g := &BlobGet{
				Digest:    resp.Request.URL.Path[strings.LastIndex(resp.Request.URL.Path, "/")+1:],
				Range:     resp.Request.Header.Get("Range"),
				UserAgent: resp.Request.Header.Get("User-Agent"),
				Start:     time.Now(),
			}
			p.mu.Lock()
			p.gets = append(p.gets, g)
			p.mu.Unlock()
			resp.Body = &countingBody{ReadCloser: resp.Body, total: &p.blobBytes, get: &g.n, last: &g.last}
		}
		return nil
	}
}

// BlobBytes returns the blob bytes served so far.
func (p *CountingProxy) BlobBytes() int64 { return p.blobBytes.Load() }

// BlobRequests returns the number of blob GETs answered so far.
func (p *CountingProxy) BlobRequests() int64 { return p.blobRequests.Load() }

// Gets returns the blob GETs answered since the last Reset, oldest first.
func (p *CountingProxy) Gets() []*BlobGet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*BlobGet(nil), p.gets...)
}

// Reset sets the counters to zero and forgets the GETs.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	p.gets = nil
	p.mu.Unlock()
	p.blobBytes.Store(0)
	p.blobRequests.Store(0)
}

// String describes the counters for messages.
func (p *CountingProxy) String() string {
	return fmt.Sprintf("%d blob bytes in %d requests", p.BlobBytes(), p.BlobRequests())
}

// countingBody adds the bytes read through it to the proxy's total and to
// its GET's count.
type countingBody struct {
	io.ReadCloser
	total, get, last *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.total.Add(int64(n))
	b.get.Add(int64(n))
	if n > 0 {
		b.last.Store(time.Now().UnixNano())
	}
	return n, err
}
