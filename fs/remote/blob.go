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
//     and truncated bodies by re-requesting the rest of the range, with
//     jittered exponential backoff; 5xx (but 501), 408 and 429 answers are
//     retried the same way. Each attempt has its own timeout.
//   - The caller's context reaches every HTTP request, so an interrupted
//     FUSE read cancels its fetch.
//   - The HTTP client is the caller's; NewTransport gives a transport fit
//     for many parallel range reads of one host (see its comment).
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
	"net/url"
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
	// MaxRetries bounds the attempts after the first one for one range
	// (default 4; negative means none).
	MaxRetries int
	// MinBackoff and MaxBackoff bound the jittered wait between attempts
	// (defaults 50ms and 2s).
	MinBackoff, MaxBackoff time.Duration
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
// ("host[:port]/repository"). It probes the blob once (see the package
// comment), so a missing blob, bad credentials or a wrong size fail here.
func Open(ctx context.Context, client Doer, ref string, dgst digest.Digest, opts Options) (*Blob, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("open blob %q: %w", dgst, err)
	}
	r.Reference = dgst.String()
	opts.setDefaults()
	scheme := "https"
	if opts.PlainHTTP {
		scheme = "http"
	}
	b := &Blob{
		client: client,
		ref:    r,
		url:    fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, r.Host(), r.Repository, dgst),
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
// redirect target.
func (b *Blob) probe(ctx context.Context) (int64, error) {
	var total int64
	err := b.withRetries(ctx, func(ctx context.Context) error {
		resp, err := b.get(ctx, 0, 1)
		if err != nil {
			return err
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
// 2xx status (any other status is turned into an error here).
func (b *Blob) get(ctx context.Context, start, end int64) (*http.Response, error) {
	u, redirected := b.target()
	resp, err := b.send(ctx, u, start, end)
	if redirected && (err != nil || resp.StatusCode >= 400) {
		// Pre-signed URLs expire: drop it and ask the registry again.
		if err == nil {
			drainClose(resp)
		}
		b.noteFinalURL("")
		resp, err = b.send(ctx, b.url, start, end)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		defer drainClose(resp)
		return nil, statusError(resp)
	}
	if !redirected && resp.Request != nil && resp.Request.URL != nil {
		b.noteFinalURL(resp.Request.URL.String())
	}
	return resp, nil
}

func (b *Blob) send(ctx context.Context, u string, start, end int64) (*http.Response, error) {
	ctx = auth.AppendRepositoryScope(ctx, b.ref, auth.ActionPull)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
	// Spans are compressed already; a transparently gunzipping transport
	// would hand us bytes that match no span digest.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redactURL(u), err)
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
	// URL is the requested URL without its query (which may hold a
	// signature).
	URL string
	// Body is the start of the answer body, at most 512 bytes.
	Body string
	// RetryAfter is the Retry-After header, if any.
	RetryAfter string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %s: %q", e.URL, http.StatusText(e.Code), e.Body)
}

// Unwrap makes errors.Is(err, ErrStatus) true.
func (e *StatusError) Unwrap() error { return ErrStatus }

// redactURL drops the query string, which for pre-signed URLs is a
// credential.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	u.RawQuery = ""
	u.User = nil
	return u.String()
}

func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
}
