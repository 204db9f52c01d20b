package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/regtest"
)

// tokenTTL is the life of each token in these tests: reads are throttled
// to span several of them.
const tokenTTL = 2 * time.Second

// tokenRegistry starts a token server and a distribution registry behind
// it, pushes data to repository "lib/app" and returns them with a client
// that holds the password (oras' auth client, as the daemon uses).
func tokenRegistry(t *testing.T, data []byte) (*regtest.TokenServer, *regtest.Registry, digest.Digest, *auth.Client) {
	t.Helper()
	ts := regtest.StartTokenServer(t, "reader", "pw", tokenTTL)
	reg := regtest.StartWithTokenAuth(t, ts)
	dgst := pushBlob(t, reg, "lib/app", data)
	cred := auth.Credential{Username: "reader", Password: "pw"}
	client := &auth.Client{
		Client:     &http.Client{Transport: NewTransport()},
		Cache:      auth.NewCache(),
		Credential: func(context.Context, string) (auth.Credential, error) { return cred, nil },
	}
	return ts, reg, dgst, client
}

// tokensSince counts the tokens issued at or after from and fails the test
// if any grants more than the one repository read.
func tokensSince(t *testing.T, ts *regtest.TokenServer, from time.Time) int {
	t.Helper()
	n := 0
	for _, tok := range ts.Issued() {
		if tok.Issued.Before(from) {
			continue
		}
		n++
		if len(tok.Scopes) != 1 || tok.Scopes[0] != "repository:lib/app:pull" {
			t.Errorf("range reads asked for a token with scopes %q, want only repository:lib/app:pull", tok.Scopes)
		}
	}
	return n
}

// TestTokenExpiresDuringLazyRead reads a layer the way a mounted layer
// does, range after range, slowly enough that the 2 s tokens expire
// several times during the read. No retries are allowed (MaxRetries -1),
// so a renewal that cost an attempt would fail the read; the Live's
// health must show no failure either.
func TestTokenExpiresDuringLazyRead(t *testing.T) {
	data := randBytes(11, 1<<20)
	ts, reg, dgst, client := tokenRegistry(t, data)
	ctx := context.Background()
	opts := fastOpts()
	opts.MaxRetries = -1
	opts.Size = int64(len(data))
	start := time.Now()
	live, err := NewLive(ctx, func(ctx context.Context) (RangeReader, error) {
		return Open(ctx, client, reg.Ref("lib/app", ""), dgst, opts)
	}, NewFetchLimit(4))
	if err != nil {
		t.Fatalf("open the blob with a token: %v", err)
	}
	const piece = 64 << 10
	// 16 ranges, one every 450 ms: the read spans 7 s, three and a half
	// token lives.
	for off := int64(0); off < int64(len(data)); off += piece {
		rc, err := live.FetchRange(ctx, off, off+piece)
		if err != nil {
			t.Fatalf("range at %d after %v: %v", off, time.Since(start).Round(time.Millisecond), err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data[off:off+piece]) {
			t.Fatalf("range at %d after %v: %d bytes, %v", off, time.Since(start).Round(time.Millisecond), len(got), err)
		}
		time.Sleep(450 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if h := live.Health(); h.LastError != nil {
		t.Errorf("health after the read: %v, want no failure", h.LastError)
	}
	// The read spans at least 7 s: the first token and at least two
	// renewals (more on a slow machine, where the read lasts longer).
	n := tokensSince(t, ts, start)
	if n < 3 {
		t.Errorf("%d tokens issued over %v, want at least 3 (the first and one per expiry)", n, elapsed.Round(time.Millisecond))
	}
	t.Logf("read %d bytes over %v with %d tokens", len(data), elapsed.Round(time.Millisecond), n)
}

// TestTokenExpiresDuringOneStream reads one long range slowly through a
// proxy that cuts every answer after 192 KiB, so the stream reconnects
// after its token has expired: the reconnection must renew the token by
// itself. Only the cuts may cost retries.
func TestTokenExpiresDuringOneStream(t *testing.T) {
	data := randBytes(12, 1<<20)
	ts, reg, dgst, client := tokenRegistry(t, data)
	up, err := url.Parse("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	var cuts atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode == http.StatusPartialContent && resp.ContentLength > 192<<10 {
			resp.Body = &cutBody{rc: resp.Body, left: 192 << 10, cuts: &cuts}
		}
		return nil
	}
	// The proxy's own error log would only repeat the cuts.
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) {}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	ctx := context.Background()
	opts := fastOpts()
	opts.MaxRetries = 8
	opts.MinRate = -1
	start := time.Now()
	b, err := Open(ctx, client, host+"/lib/app", dgst, opts)
	if err != nil {
		t.Fatalf("open through the proxy: %v", err)
	}
	rc, err := b.FetchRange(ctx, 0, int64(len(data)))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	defer rc.Close()
	// 128 KiB/s: 8 s for the MiB, four token lives.
	var got []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := rc.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read at %d after %v: %v", len(got), time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(time.Duration(n) * time.Second / (128 << 10))
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the blob's %d", len(got), len(data))
	}
	elapsed := time.Since(start)
	n := tokensSince(t, ts, start)
	if cuts.Load() < 4 || n < 3 {
		t.Errorf("%d cuts and %d tokens over %v; the test wants the stream to reconnect with expired tokens (≥4 cuts, ≥3 tokens)",
			cuts.Load(), n, elapsed.Round(time.Millisecond))
	}
	t.Logf("one stream of %d bytes over %v: %d cuts, %d tokens", len(data), elapsed.Round(time.Millisecond), cuts.Load(), n)
}

// cutBody ends an answer with an error after left bytes, as a connection
// reset would.
type cutBody struct {
	rc   io.ReadCloser
	left int64
	cuts *atomic.Int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cuts.Add(1)
		return 0, errors.New("cut by the test proxy")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.rc.Close() }

// TestStaleTokenCostsNoAttempt: the token server hands out one token that
// is expired on arrival, so oras' renewal after the expired token is
// refused as well. Blob asks once more, which buys a good token, without
// spending an attempt: with no retries allowed the read still succeeds.
func TestStaleTokenCostsNoAttempt(t *testing.T) {
	data := randBytes(13, 256<<10)
	ts, reg, dgst, client := tokenRegistry(t, data)
	ctx := context.Background()
	opts := fastOpts()
	opts.MaxRetries = -1
	b, err := Open(ctx, client, reg.Ref("lib/app", ""), dgst, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	time.Sleep(tokenTTL + 300*time.Millisecond)
	ts.IssueStale(1)
	got, err := readRange(ctx, b, 1000, 100_000)
	if err != nil || !bytes.Equal(got, data[1000:100_000]) {
		t.Fatalf("read after a stale token: %d bytes, %v", len(got), err)
	}
	var stale int
	for _, tok := range ts.Issued() {
		if tok.Stale {
			stale++
		}
	}
	if stale != 1 {
		t.Fatalf("stale tokens issued: %d, want 1 (the test did not exercise the path)", stale)
	}
}
