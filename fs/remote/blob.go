// Package remote owns ranged reads of one layer blob from its registry over
// HTTP (distribution-spec v1.1.1 "Pulling blobs", with Range requests:
// https://github.com/opencontainers/distribution-spec/blob/v1.1.1/spec.md#fetching-blobs).
//
// Concepts:
//   - A Blob is opened once per layer with Open, which probes the blob with a
//     one-byte range request: this learns and checks its size (from
//     Content-Range) and the URL the registry redirects to (often a
//     pre-signed storage URL). That final URL is used directly for later
//     requests until it fails, then the registry URL is asked again.
//   - FetchRange streams [start, end). The stream survives connection resets
//     and truncated bodies by re-requesting the rest of the range; 5xx (but
//     501), 408 and 429 answers are retried the same way. This is the only
//     retry layer: the client handed to Open must not retry by itself (a
//     retrying transport under it multiplies the requests).
//   - Retries are bounded per range, not per failure streak: one range
//     costs at most 1 + MaxRetries requests, whatever progress each makes.
//     Between attempts the wait is exponential with jitter, or what a 429 or
//     503 asks in Retry-After (capped at MaxRetryAfter).
//   - Each attempt has limits: RequestTimeout, and a minimum transfer rate
//     (MinRate over each RateWindow, headers included), so a stalled or
//     trickling server costs one attempt of bounded length. A failing read
//     of S bytes therefore ends within (1 + MaxRetries) attempts of at most
//     min(RequestTimeout, RateWindow × (1 + S / (MinRate × RateWindow)))
//     each, plus MaxRetries waits of at most max(1.25 × MaxBackoff,
//     MaxRetryAfter). Open's probe (one byte) must be answered within one
//     RateWindow per attempt.
//   - Bearer tokens are the client's business (oras' auth.Client renews
//     a refused one), but a 401 to a token that was refused again right
//     after renewal is asked once more, at no cost to the retry budget:
//     tokens expire during long lazy reads, and that is no fault.
//   - Redirects from HTTPS to plain HTTP are refused, and no error carries a
//     URL's query string (pre-signed URLs are credentials).
//   - A blob is named by its oras registry.Reference (OpenReference), parsed
//     once by the caller; the registry host is ref.Host(), which maps the
//     "docker.io" name to Docker Hub's API host.
//   - A Live is what a mounted layer reads through: the current Blob, which
//     Reprobe replaces by a freshly opened one (a containerd Check after an
//     outage), the registry's Health (last contact, last failure since; a
//     cancelled reader is no failure), and a slot of a FetchLimit shared by
//     every layer for each open stream.
//   - The caller's context reaches every HTTP request, so an interrupted
//     FUSE read cancels its fetch.
//   - The HTTP client is the caller's; NewTransport gives a transport fit
//     for many parallel range reads of one host (see its comment). The
//     client may send a request to another host by itself (internal/hosts:
//     the mirrors of containerd's hosts.toml, falling over between them);
//     only a redirect's target is cached, so every new request lets it
//     choose again, and a range that broke on a mirror resumes, on the next
//     attempt, from wherever the client sends it.
//
// Hazards: the registry is untrusted. Answers are checked (status,
// Content-Range, length) and error bodies are read only up to a small bound,
// so an HTML error page gives a clear error rather than an allocation. Bytes
// are not verified here: that is fs/span's job, against the zTOC's span
// digests.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Doer sends one HTTP request. *auth.Client (oras), which handles 401
// challenges and token caching, and *http.Client both satisfy it.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// ErrRangeUnsupported reports a server that ignored a Range header far into
// the blob (it answered 200 with the whole blob).
var ErrRangeUnsupported = errors.New("registry does not support range requests")

// ErrSizeMismatch reports a blob whose size differs from the expected one.
var ErrSizeMismatch = errors.New("blob size mismatch")

// ErrStatus reports an HTTP answer the fetch could not use.
var ErrStatus = errors.New("unexpected HTTP status")

// Options holds the knobs of a Blob. The zero value gives the defaults.
type Options struct {
	// PlainHTTP uses http:// instead of https:// for the registry.
	PlainHTTP bool
	// Size is the expected blob size (e.g. the zTOC's compressed archive
	// size); 0 means unknown. Open fails with ErrSizeMismatch otherwise.
	Size int64
	// RequestTimeout bounds one HTTP attempt, headers and body (default
	// 30s).
	RequestTimeout time.Duration
	// MaxRetries bounds the requests for one range (and for Open's probe)
	// to 1 + MaxRetries, counting every retry: after an error status, a
	// reset or truncated body, an attempt too slow, or a cached storage URL
	// that failed (default 4; negative means none).
	MaxRetries int
	// MinBackoff and MaxBackoff bound the jittered wait between attempts
	// (defaults 50ms and 2s).
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the wait a 429 or 503 answer asks for in
	// Retry-After (default 10s).
	MaxRetryAfter time.Duration
	// MinRate is the slowest transfer, in bytes per second, an attempt may
	// keep: each RateWindow of an attempt, from its start (so the wait for
	// headers counts), must bring MinRate × RateWindow bytes or the rest of
	// the range, else the attempt is cancelled with ErrTooSlow and retried
	// (default 64 KiB/s; negative means no minimum).
	MinRate int64
	// RateWindow is the period over which MinRate is averaged (default
	// 10s).
	RateWindow time.Duration
	// MaxDiscard is how many leading bytes of a 200 (full body) answer to
	// a range request may be read and dropped to reach the range start
	// (default 1 MiB); beyond it the fetch fails with ErrRangeUnsupported.
	MaxDiscard int64
}

func (o *Options) setDefaults() {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 4
	} else if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 50 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 10 * time.Second
	}
	if o.MinRate == 0 {
		o.MinRate = 64 << 10
	}
	if o.RateWindow <= 0 {
		o.RateWindow = 10 * time.Second
	}
	if o.MaxDiscard <= 0 {
		o.MaxDiscard = 1 << 20
	}
}

// maxErrorBody bounds how much of an error answer is read into a message.
const maxErrorBody = 512

// Blob reads byte ranges of one layer blob. It is safe for concurrent use.
type Blob struct {
	client Doer
	ref    registry.Reference
	url    string // the registry's blob URL
	opts   Options
	size   int64

	// fetched counts body bytes received, over all requests.
	fetched atomic.Int64

	// mu guards redirect: the last final URL the registry redirected to,
	// used directly until a request to it fails.
	mu       sync.Mutex
	redirect string
}

// Open prepares ranged reads of the blob dgst in repository ref
// ("host[:port]/repository"). It is OpenReference for a caller holding the
// repository as text (tests, tools).
func Open(ctx context.Context, client Doer, ref string, dgst digest.Digest, opts Options) (*Blob, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	r.Reference = dgst.String()
	return OpenReference(ctx, client, r, opts)
}

// OpenReference prepares ranged reads of the blob ref names: ref.Reference
// is the blob's digest, and ref.Host() the registry asked (it maps
// "docker.io" to Docker Hub's API host). It probes the blob once (see the
// package comment), so a missing blob, bad credentials or a wrong size
// fail here.
func OpenReference(ctx context.Context, client Doer, ref registry.Reference, opts Options) (*Blob, error) {
	dgst, err := ref.Digest()
	if err != nil {
		return nil, fmt.Errorf("open blob %q: %w", ref.Reference, err)
	}
	if err := ref.ValidateRepository(); err != nil {
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	opts.setDefaults()
	scheme := "https"
	if opts.PlainHTTP {
		scheme = "http"
	}
	b := &Blob{
		client: guardRedirects(client),
		ref:    ref,
		url:    fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Host(), ref.Repository, dgst),
		opts:   opts,
	}
	size, err := b.probe(ctx)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	if opts.Size > 0 && size != opts.Size {
		return nil, fmt.Errorf("open blob %s: registry says %d bytes, expected %d: %w", dgst, size, opts.Size, ErrSizeMismatch)
	}
	b.size = size
	return b, nil
}

// Size returns the blob size learnt by Open.
func (b *Blob) Size() int64 { return b.size }

// FetchedBytes returns the body bytes received so far, over all requests.
func (b *Blob) FetchedBytes() int64 { return b.fetched.Load() }

// URL returns the registry URL of the blob.
func (b *Blob) URL() string { return b.url }

// probe asks for the first byte, which reveals the total size and the
// redirect target. Its attempts are bounded like a range's.
func (b *Blob) probe(ctx context.Context) (int64, error) {
	var total int64
	err := b.withRetries(ctx, func(a *attempt) error {
		resp, err := b.get(a.ctx, 0, 1)
		if err != nil {
			return a.explain(err)
		}
		defer closeForReuse(resp.Body)
		info, err := checkRange(resp, 0, 1)
		total = info.total
		if err == nil && total < 0 {
			return fmt.Errorf("range answer without total size: %w", ErrStatus)
		}
		return err
	})
	return total, err
}

// withRetries runs fn, one attempt per call, until it succeeds, fails for
// good, or 1 + MaxRetries attempts are spent.
func (b *Blob) withRetries(ctx context.Context, fn func(*attempt) error) error {
	for n := 1; ; n++ {
		a := b.newAttempt(ctx, 1)
		err := fn(a)
		a.end()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after: %w)", context.Cause(ctx), err)
		}
		wait, ok := retryable(err, n, b.opts)
		if !ok || n > b.opts.MaxRetries {
			return fmt.Errorf("attempt %d of %d: %w", n, 1+b.opts.MaxRetries, err)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (after: %w)", serr, err)
		}
	}
}

// closeForReuse reads what is left of a short body, up to a few KiB, before
// closing it: a body closed unread takes its connection with it, and the
// next request (a layer's first span, right after the probe at mount) then
// waited for a new connection, measured at 4 ms on loopback.
func closeForReuse(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	body.Close()
}

// FetchRange returns a stream of the bytes [start, end) of the blob. The
// stream reconnects by itself after a reset or a truncated body; its Read
// fails once the retries are spent or ctx is done. Close it when done:
// closing early stops the transfer.
func (b *Blob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	if start < 0 || end < start || (b.size > 0 && end > b.size) {
		return nil, fmt.Errorf("fetch range [%d,%d) of %d-byte blob: out of range", start, end, b.size)
	}
	rr := &rangeReader{b: b, ctx: ctx, off: start, end: end}
	if start == end {
		return rr, nil
	}
	// Open the first connection now, so status errors surface here.
	if err := rr.connect(); err != nil {
		return nil, err
	}
	return rr, nil
}

// target returns the URL to ask: the cached redirect if any.
func (b *Blob) target() (u string, redirected bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.redirect != "" {
		return b.redirect, true
	}
	return b.url, false
}

// noteFinalURL caches where the registry sent us, or forgets a cached URL
// that failed.
func (b *Blob) noteFinalURL(final string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if final == b.url {
		final = ""
	}
	b.redirect = final
}

// get sends one range request [start, end) and returns a response with a
// 2xx status (any other status is turned into an error here). A failure of
// a cached storage URL forgets it and is reported as errStaleRedirect, so
// that the retry, which counts as one, asks the registry again at once.
func (b *Blob) get(ctx context.Context, start, end int64) (*http.Response, error) {
	u, redirected := b.target()
	resp, err := b.send(ctx, u, start, end)
	if err == nil && refusedToken(resp) {
		// oras' auth client renews a refused token by itself, but a token
		// refused right after it was issued (a token server whose clock
		// is behind) still comes back as 401. Asking once more buys a
		// fresh token; the registry did nothing wrong, so this costs no
		// attempt and is no failure.
		drainClose(resp)
		resp, err = b.send(ctx, u, start, end)
	}
	if err == nil && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		err = statusError(resp)
		drainClose(resp)
	}
	if err == nil {
		err = b.checkFinalURL(resp)
		if err != nil {
			drainClose(resp)
		}
	}
	if err != nil {
		if redirected && ctx.Err() == nil {
			// Pre-signed URLs expire.
			b.noteFinalURL("")
			return nil, &errStaleRedirect{err}
		}
		return nil, err
	}
	if !redirected && resp.Request != nil && resp.Request.URL != nil && resp.Request.Response != nil {
		// Only a redirect's target is remembered: a client that sent the
		// request elsewhere by itself (a mirror of hosts.toml) must be
		// asked again each time, so it can choose again.
		b.noteFinalURL(resp.Request.URL.String())
	}
	return resp, nil
}

// refusedToken says resp is a 401 to a request that carried a bearer
// token, i.e. the token (not the credentials behind it) was refused.
func refusedToken(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized || resp.Request == nil {
		return false
	}
	scheme, _, _ := strings.Cut(resp.Request.Header.Get("Authorization"), " ")
	return strings.EqualFold(scheme, "bearer")
}

// checkFinalURL refuses an answer that came over plain HTTP after a
// redirect from HTTPS: a client whose redirect policy Open could not guard
// followed a downgrade. The chain of redirects is walked back rather than
// compared with the blob URL, because the client may have sent the first
// request elsewhere (a mirror of hosts.toml, which may be plain HTTP).
func (b *Blob) checkFinalURL(resp *http.Response) error {
	for r := resp.Request; r != nil && r.URL != nil && r.Response != nil; r = r.Response.Request {
		prev := r.Response.Request
		if prev == nil || prev.URL == nil {
			break
		}
		if prev.URL.Scheme == "https" && r.URL.Scheme != "https" {
			return fmt.Errorf("%w: from https://%s to %s://%s", ErrInsecureRedirect, prev.URL.Host, r.URL.Scheme, r.URL.Host)
		}
	}
	return nil
}

func (b *Blob) send(ctx context.Context, u string, start, end int64) (*http.Response, error) {
	ctx = auth.AppendRepositoryScope(ctx, b.ref, auth.ActionPull)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redactURL(u), redactError(err))
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	// Spans are compressed already; a transparently gunzipping transport
	// would hand us bytes that match no span digest.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := b.client.Do(req)
	if err != nil {
		// The client's *url.Error names the last URL asked, after a
		// redirect the pre-signed one.
		return nil, redactError(err)
	}
	return resp, nil
}

// statusError describes a non-2xx answer with a bounded excerpt of its body.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	u := ""
	if resp.Request != nil && resp.Request.URL != nil {
		u = redactURL(resp.Request.URL.String())
	}
	return &StatusError{Code: resp.StatusCode, URL: u, Body: string(body),
		RetryAfter: resp.Header.Get("Retry-After")}
}

// StatusError is an HTTP answer with an unusable status. It wraps ErrStatus.
type StatusError struct {
	// Code is the HTTP status code.
	Code int
	// URL is the requested URL with its query (which may hold a
	// signature) redacted.
	URL string
	// Body is the start of the answer body, at most 512 bytes.
	Body string
	// RetryAfter is the Retry-After header, if any.
	RetryAfter string
}

func (e *StatusError) Error() string {
	// The body may quote a storage URL (S3's error documents do).
	return fmt.Sprintf("GET %s: %s: %q", e.URL, http.StatusText(e.Code), redactText(e.Body))
}

// Unwrap makes errors.Is(err, ErrStatus) true.
func (e *StatusError) Unwrap() error { return ErrStatus }

func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
}
