package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// rangeReader streams [off, end) of a blob, reconnecting after failures.
// It is used by one goroutine at a time, as io.Reader requires.
type rangeReader struct {
	b   *Blob
	ctx context.Context
	off int64 // next byte to return
	end int64

	body     io.ReadCloser
	cancel   context.CancelFunc // ends the current attempt
	failures int                // consecutive failures without progress
}

// Read implements io.Reader.
func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.end {
			r.closeBody()
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		if rest := r.end - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.off += int64(n)
			r.b.fetched.Add(int64(n))
			r.failures = 0
			if err != nil {
				r.closeBody() // reconnect (or finish) on the next call
			}
			return n, nil
		}
		if err == nil {
			continue
		}
		r.closeBody()
		if err == io.EOF {
			err = fmt.Errorf("body ended %d bytes early: %w", r.end-r.off, io.ErrUnexpectedEOF)
		}
		if werr := r.waitRetry(err); werr != nil {
			return 0, werr
		}
	}
}

// Close implements io.Closer; it stops the transfer.
func (r *rangeReader) Close() error {
	r.closeBody()
	r.off = r.end
	return nil
}

func (r *rangeReader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.cancel != nil {
		r.cancel()
		r.cancel = nil
	}
}

// connect opens a request for [off, end), retrying as the policy allows.
func (r *rangeReader) connect() error {
	for {
		err := r.tryConnect()
		if err == nil {
			return nil
		}
		if werr := r.waitRetry(err); werr != nil {
			return werr
		}
	}
}

func (r *rangeReader) tryConnect() error {
	ctx, cancel := context.WithTimeout(r.ctx, r.b.opts.RequestTimeout)
	resp, err := r.b.get(ctx, r.off, r.end)
	if err != nil {
		cancel()
		return err
	}
	info, err := checkRange(resp, r.off, r.end)
	if err == nil && info.discard > r.b.opts.MaxDiscard {
		err = fmt.Errorf("200 answer to a range starting at %d: %w", r.off, ErrRangeUnsupported)
	}
	if err == nil && info.discard > 0 {
		_, err = io.CopyN(io.Discard, resp.Body, info.discard)
	}
	if err != nil {
		resp.Body.Close()
		cancel()
		return err
	}
	r.body, r.cancel = resp.Body, cancel
	return nil
}

// waitRetry decides whether err may be retried; if so it sleeps the backoff
// and returns nil, else it returns the final error.
func (r *rangeReader) waitRetry(err error) error {
	if cerr := r.ctx.Err(); cerr != nil {
		return fmt.Errorf("fetch [%d,%d) of %s: %w", r.off, r.end, r.b.url, context.Cause(r.ctx))
	}
	r.failures++
	wait, ok := retryable(err, r.failures, r.b.opts)
	if !ok || r.failures > r.b.opts.MaxRetries {
		return fmt.Errorf("fetch [%d,%d) of %s (attempt %d): %w", r.off, r.end, r.b.url, r.failures, err)
	}
	return sleep(r.ctx, wait)
}

// withRetries runs fn until it succeeds, fails for good, or the retries run
// out.
func (b *Blob) withRetries(ctx context.Context, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after: %v)", context.Cause(ctx), err)
		}
		wait, ok := retryable(err, attempt, b.opts)
		if !ok || attempt > b.opts.MaxRetries {
			return err
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// retryable classifies err: statuses 408, 429 and 5xx but 501 are
// transient, as are transport errors (resets, refused connections while a
// registry restarts, truncated bodies, attempt timeouts); protocol
// violations are not.
func retryable(err error, attempt int, o Options) (time.Duration, bool) {
	wait := backoff(attempt, o.MinBackoff, o.MaxBackoff)
	var se *StatusError
	switch {
	case errors.As(err, &se):
		switch {
		case se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout:
		case se.Code >= 500 && se.Code != http.StatusNotImplemented:
		default:
			return 0, false
		}
		if s, perr := strconv.Atoi(se.RetryAfter); perr == nil && s > 0 {
			wait = min(time.Duration(s)*time.Second, 4*o.MaxBackoff)
		}
		return wait, true
	case errors.Is(err, ErrRangeUnsupported), errors.Is(err, ErrSizeMismatch), errors.Is(err, errBadRange):
		return 0, false
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		// No credentials for a registry that demands them: asking again
		// cannot help, and retrying only delays the error by seconds.
		return 0, false
	}
	return wait, true
}

// backoff is exponential from min to max with ±25% jitter, so many readers
// failing together do not retry in lockstep.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt-1, 30)
	if d > hi || d <= 0 {
		d = hi
	}
	j := time.Duration(rand.Int64N(int64(d)/2 + 1))
	return d*3/4 + j
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// errBadRange reports a Content-Range that does not answer the request.
var errBadRange = errors.New("bad Content-Range")

// rangeInfo is what checkRange learnt from an answer.
type rangeInfo struct {
	total   int64 // blob size, -1 when the server did not say
	discard int64 // leading body bytes to skip (200 answers)
}

// checkRange validates a 2xx answer to a request for [start, end).
func checkRange(resp *http.Response, start, end int64) (rangeInfo, error) {
	if resp.StatusCode == http.StatusOK {
		// The server ignored Range and sends the whole blob.
		total := resp.ContentLength
		if total >= 0 && total < end {
			return rangeInfo{}, fmt.Errorf("full answer of %d bytes for range ending at %d: %w", total, end, errBadRange)
		}
		return rangeInfo{total: total, discard: start}, nil
	}
	cr := resp.Header.Get("Content-Range")
	first, last, total, err := parseContentRange(cr)
	if err != nil {
		return rangeInfo{}, err
	}
	if first != start || last != end-1 {
		return rangeInfo{}, fmt.Errorf("asked bytes %d-%d, got %q: %w", start, end-1, cr, errBadRange)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != end-start {
		return rangeInfo{}, fmt.Errorf("Content-Length %d for %d-byte range: %w", resp.ContentLength, end-start, errBadRange)
	}
	return rangeInfo{total: total}, nil
}

// parseContentRange parses "bytes first-last/total" (total may be "*").
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%q: %w", s, errBadRange)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, bad
		}
	}
	return first, last, total, nil
}
