package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// rangeReader streams [off, end) of a blob, reconnecting after failures.
// It is used by one goroutine at a time, as io.Reader requires.
type rangeReader struct {
	b   *Blob
	ctx context.Context
	off int64 // next byte to return
	end int64

	body io.ReadCloser
	cur  *attempt // limits of the current request, nil between requests
	// attempts counts the requests sent for this range. It never goes
	// back: progress does not buy more retries, so a server that sends a
	// byte and stalls, again and again, still ends the read.
	attempts int
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
			r.cur.got.Add(int64(n))
			if err != nil || r.off >= r.end {
				r.closeBody() // reconnect (or finish) on the next call
			}
			return n, nil
		}
		if err == nil {
			continue
		}
		err = r.cur.explain(err)
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
	if r.cur != nil {
		r.cur.end()
		r.cur = nil
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
	r.attempts++
	a := r.b.newAttempt(r.ctx, r.end-r.off)
	resp, err := r.b.get(a.ctx, r.off, r.end)
	if err != nil {
		err = a.explain(err)
		a.end()
		return err
	}
	info, err := checkRange(resp, r.off, r.end)
	if err == nil && info.discard > r.b.opts.MaxDiscard {
		err = fmt.Errorf("200 answer to a range starting at %d: %w", r.off, ErrRangeUnsupported)
	}
	if err == nil && info.discard > 0 {
		_, err = io.CopyN(io.Discard, resp.Body, info.discard)
		err = a.explain(err)
	}
	if err != nil {
		resp.Body.Close()
		a.end()
		return err
	}
	r.body, r.cur = resp.Body, a
	return nil
}

// waitRetry decides whether err may be retried; if so it sleeps the backoff
// and returns nil, else it returns the final error. A cancelled ctx ends
// it at once, sleeping or not.
func (r *rangeReader) waitRetry(err error) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("fetch [%d,%d) of %s: %w (after: %w)", r.off, r.end, r.b.url, context.Cause(r.ctx), err)
	}
	wait, ok := retryable(err, r.attempts, r.b.opts)
	if !ok || r.attempts > r.b.opts.MaxRetries {
		return fmt.Errorf("fetch [%d,%d) of %s (attempt %d of %d): %w", r.off, r.end, r.b.url, r.attempts, 1+r.b.opts.MaxRetries, err)
	}
	if serr := sleep(r.ctx, wait); serr != nil {
		return fmt.Errorf("fetch [%d,%d) of %s: %w (after: %w)", r.off, r.end, r.b.url, serr, err)
	}
	return nil
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
