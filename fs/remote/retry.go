package remote

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// ErrTooSlow reports an attempt that received less than Options.MinRate
// over one Options.RateWindow (a stalled or trickling server). It is
// retried like a reset connection.
var ErrTooSlow = errors.New("transfer slower than the minimum rate")

// ErrAttemptTimeout reports an attempt that outlived Options.RequestTimeout.
var ErrAttemptTimeout = errors.New("request timed out")

// attempt is one HTTP request of a fetch, with its own limits: a hard
// timeout and, when a minimum rate is set, a watchdog that cancels the
// request when a window passes with too few bytes. A stalled or trickling
// server thus costs one attempt of bounded length instead of hanging the
// read or resetting the retry count with each byte.
type attempt struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   context.CancelFunc // releases the timeout's timer

	// got counts body bytes of this attempt; Read adds, the watchdog reads.
	got atomic.Int64
	// want is the number of bytes this attempt was asked for.
	want int64
	// need is the byte count each window must bring (MinRate × RateWindow).
	need   int64
	window time.Duration
	timer  *time.Timer
	// mark is got at the start of the current window; only the watchdog
	// (whose runs are sequential: each schedules the next) touches it.
	mark int64
}

// newAttempt starts the limits of one request for want bytes under parent.
func (b *Blob) newAttempt(parent context.Context, want int64) *attempt {
	timeout := b.opts.RequestTimeout
	tctx, stop := context.WithTimeoutCause(parent, timeout, fmt.Errorf("%w after %s", ErrAttemptTimeout, timeout))
	ctx, cancel := context.WithCancelCause(tctx)
	a := &attempt{ctx: ctx, cancel: cancel, stop: stop, want: want}
	if b.opts.MinRate > 0 {
		a.window = b.opts.RateWindow
		a.need = max(1, int64(float64(b.opts.MinRate)*a.window.Seconds()))
		a.timer = time.AfterFunc(a.window, a.check)
	}
	return a
}

// check runs at the end of each window: the window must have brought
// MinRate × RateWindow bytes, or all that was left of the attempt's range.
func (a *attempt) check() {
	got := a.got.Load()
	need := min(a.need, a.want-a.mark)
	if got-a.mark < need {
		a.cancel(fmt.Errorf("%w: %d bytes in %s, need %d", ErrTooSlow, got-a.mark, a.window, need))
		return
	}
	a.mark = got
	a.timer.Reset(a.window)
}

// end releases the attempt (its request, timers and watchdog).
func (a *attempt) end() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.cancel(context.Canceled)
	a.stop()
}

// explain returns the attempt's own limit when that is why err happened
// (the transport then only says "context canceled"), else err.
func (a *attempt) explain(err error) error {
	if a.ctx.Err() == nil {
		return err
	}
	cause := context.Cause(a.ctx)
	if errors.Is(cause, ErrTooSlow) || errors.Is(cause, ErrAttemptTimeout) {
		return cause
	}
	return err
}

// errStaleRedirect marks a failure of a cached storage URL (often an
// expired pre-signed URL): the next attempt asks the registry again, at
// once.
type errStaleRedirect struct{ err error }

func (e *errStaleRedirect) Error() string {
	return "cached redirect target failed, asking the registry again: " + e.err.Error()
}

func (e *errStaleRedirect) Unwrap() error { return e.err }

// retryable classifies err: statuses 408, 429 and 5xx but 501 are
// transient, as are transport errors (resets, refused connections while a
// registry restarts, truncated bodies, stalls and attempt timeouts);
// protocol violations, insecure redirects and missing credentials are not.
// attempt counts the attempts made so far (1 after the first failure).
func retryable(err error, attempt int, o Options) (time.Duration, bool) {
	var stale *errStaleRedirect
	if errors.As(err, &stale) {
		return 0, true
	}
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
		if se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable {
			if d, ok := parseRetryAfter(se.RetryAfter, time.Now()); ok {
				wait = min(d, o.MaxRetryAfter)
			}
		}
		return wait, true
	case errors.Is(err, ErrRangeUnsupported), errors.Is(err, ErrSizeMismatch), errors.Is(err, errBadRange),
		errors.Is(err, ErrInsecureRedirect):
		return 0, false
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		// No credentials for a registry that demands them: asking again
		// cannot help, and retrying only delays the error by seconds.
		return 0, false
	}
	return wait, true
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date
// (RFC 9110 section 10.2.3). A date in the past means no wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 1<<30)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(0, t.Sub(now)), true
}

// backoff is exponential from lo to hi with ±25% jitter, so many readers
// failing together do not retry in lockstep.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(max(attempt-1, 0), 30)
	if d > hi || d <= 0 {
		d = hi
	}
	j := time.Duration(rand.Int64N(int64(d)/2 + 1))
	return d*3/4 + j
}

// sleep waits d, or less if ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
