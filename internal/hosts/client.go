package hosts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/log"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/redact"
)

// Doer sends one HTTP request: oras' *auth.Client, *http.Client.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// Client sends registry requests through the configured hosts of their
// registry (see the package comment), each through next. It is safe for
// concurrent use.
type Client struct {
	h    *Hosts
	next Doer
}

// Client returns a client that routes requests through h's hosts and sends
// each through next (normally an oras auth.Client whose transport is
// h.Transport(), possibly under other layers).
func (h *Hosts) Client(next Doer) *Client {
	return &Client{h: h, next: next}
}

// Next returns the client requests are sent through.
func (c *Client) Next() Doer { return c.next }

// Do implements Doer. A request that is not a registry API call
// ("/v2/..."), or whose registry has no configuration, goes to next as it
// is.
func (c *Client) Do(req *http.Request) (*http.Response, error) {
	if req.URL == nil || !strings.HasPrefix(req.URL.Path, "/v2/") {
		return c.next.Do(req)
	}
	name := registryName(req.URL.Host)
	eps, err := c.h.lookup(req.Context(), name, req.URL.Scheme)
	if err != nil {
		return nil, err
	}
	if eps == nil {
		return c.next.Do(req)
	}
	cands, err := candidates(eps, req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, redact.URL(req.URL.String()), err)
	}
	return c.try(req, name, cands)
}

// try sends req to each candidate host in turn until one answers well; the
// last one's answer is returned whatever it is.
func (c *Client) try(req *http.Request, name string, cands []*endpoint) (*http.Response, error) {
	ctx := req.Context()
	var failed []string
	for i, ep := range cands {
		last := i == len(cands)-1
		if !last && c.h.skipped(ep) {
			continue
		}
		out, err := rewrite(req, name, ep, i > 0)
		if err != nil {
			return nil, err
		}
		var resp *http.Response
		if last {
			resp, err = c.next.Do(out)
		} else {
			resp, err = c.sendMirror(out)
		}
		if err != nil {
			if ctx.Err() != nil {
				c.noteDone(ctx, ep)
				return nil, withEarlier(err, failed)
			}
			c.h.bench(ctx, ep, err)
			if last {
				return nil, withEarlier(err, failed)
			}
			failed = append(failed, fmt.Sprintf("%s: %v", ep.host, redact.Error(err)))
			log.G(ctx).WithError(redact.Error(err)).WithField("host", ep.host).Debug("registry host failed, trying the next")
			continue
		}
		if last || resp.StatusCode < 400 {
			if !last && resp.Body != nil {
				resp.Body = &watchedBody{ReadCloser: resp.Body, c: c, ctx: ctx, ep: ep}
			}
			return resp, nil
		}
		if resp.StatusCode >= 500 {
			c.h.bench(ctx, ep, fmt.Errorf("HTTP %s", resp.Status))
		}
		failed = append(failed, fmt.Sprintf("%s: %s", ep.host, resp.Status))
		log.G(ctx).WithField("host", ep.host).WithField("status", resp.StatusCode).Debug("registry host refused, trying the next")
		discard(resp)
	}
	// Unreachable: the last candidate always returns.
	return nil, errors.New("no registry host to try")
}

// errNoAnswer reports a mirror that sent no answer's headers within
// Options.HeaderTimeout.
var errNoAnswer = errors.New("no answer in time")

// sendMirror sends out to a host that is not the last, waiting at most
// Options.HeaderTimeout for the answer's headers: a mirror that accepts
// connections but never answers hands the request on instead of holding
// it (for a lazy read, holding a container) until the caller's own limits
// end it. The bound stops when the headers arrive; the body then lives
// until it is closed.
func (c *Client) sendMirror(out *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(out.Context())
	timer := time.AfterFunc(c.h.opts.HeaderTimeout, func() { cancel(errNoAnswer) })
	resp, err := c.next.Do(out.WithContext(ctx))
	fired := !timer.Stop()
	if err == nil && fired {
		// The bound ended just as the answer came: its body is cut.
		discard(resp)
		err = errNoAnswer
	}
	if err != nil {
		cancel(context.Canceled)
		if errors.Is(context.Cause(ctx), errNoAnswer) && out.Context().Err() == nil {
			return nil, fmt.Errorf("%w (%s)", errNoAnswer, c.h.opts.HeaderTimeout)
		}
		return nil, err
	}
	if resp.Body == nil {
		cancel(context.Canceled)
	} else {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	}
	return resp, nil
}

// cancelOnClose ends a mirror request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(context.Canceled)
	return err
}

// noteDone benches ep when the request ended for a reason of the host's
// making: a deadline or a limit of the caller's (a minimum rate, an
// attempt timeout), not the caller giving up.
func (c *Client) noteDone(ctx context.Context, ep *endpoint) {
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		c.h.bench(ctx, ep, cause)
	}
}

// withEarlier adds to err which hosts failed before, if any.
func withEarlier(err error, failed []string) error {
	if len(failed) == 0 {
		return err
	}
	return fmt.Errorf("%w (before it: %s)", err, strings.Join(failed, "; "))
}

// discard drains a bounded rest of an answer we do not use, so its
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	if resp.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

// watchedBody benches its host when the body breaks off for a reason of
// the host's making, so the caller's retry goes to the next host.
type watchedBody struct {
	io.ReadCloser
	c   *Client
	ctx context.Context
	ep  *endpoint
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if b.ctx.Err() != nil {
			b.c.noteDone(b.ctx, b.ep)
		} else {
			b.c.h.bench(b.ctx, b.ep, err)
		}
	}
	return n, err
}

// candidates returns the hosts that may serve req, in order, as containerd
// chooses them: by the capability the request needs.
func candidates(eps []*endpoint, req *http.Request) ([]*endpoint, error) {
	need, what := capabilityFor(req.Method, req.URL.Path)
	var out []*endpoint
	switch need {
	case 0: // not an API call containerd makes: the registry itself
		return eps[len(eps)-1:], nil
	case docker.HostCapabilityPush:
		for _, ep := range eps {
			if ep.caps.Has(need) {
				return []*endpoint{ep}, nil
			}
		}
	case docker.HostCapabilityReferrers:
		out = withCapability(eps, need)
		if len(out) == 0 {
			out = withCapability(eps, docker.HostCapabilityResolve)
		}
	default:
		out = withCapability(eps, need)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no configured host may %s", what)
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		// A body that cannot be sent twice goes to one host.
		out = out[:1]
	}
	return out, nil
}

func withCapability(eps []*endpoint, need docker.HostCapabilities) []*endpoint {
	var out []*endpoint
	for _, ep := range eps {
		if ep.caps&need == need {
			out = append(out, ep)
		}
	}
	return out
}

// capabilityFor is the capability a request needs, and a phrase for
// errors; 0 for requests only the registry itself answers (the API root,
// the catalog). The kind of call is read from the end of the path, since
// a repository name may contain "blobs" or "manifests" itself.
func capabilityFor(method, path string) (docker.HostCapabilities, string) {
	if method != http.MethodGet && method != http.MethodHead {
		return docker.HostCapabilityPush, "push"
	}
	segs := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	n := len(segs)
	at := func(i int, s string) bool { return n+i >= 1 && segs[n+i] == s }
	switch {
	case at(-2, "blobs") && at(-1, "uploads"), at(-3, "blobs") && at(-2, "uploads"):
		return docker.HostCapabilityPush, "push"
	case at(-2, "tags") && at(-1, "list"):
		return docker.HostCapabilityResolve, "list tags"
	case at(-2, "blobs"):
		return docker.HostCapabilityPull, "pull"
	case at(-2, "manifests"):
		if strings.Contains(segs[n-1], ":") {
			return docker.HostCapabilityPull, "pull"
		}
		return docker.HostCapabilityPull | docker.HostCapabilityResolve, "resolve a tag"
	case at(-2, "referrers"):
		return docker.HostCapabilityReferrers, "list referrers"
	}
	return 0, ""
}

// rewrite returns req addressed to ep: its scheme, address and API root,
// with its headers, containerd's "ns" parameter for a host that is not the
// registry itself, the request's token scopes carried over to ep's address,
// and ep's transport in the context. again says an earlier host was tried,
// so the body must be got anew.
func rewrite(req *http.Request, name string, ep *endpoint, again bool) (*http.Request, error) {
	ctx := req.Context()
	if ep.host != req.URL.Host {
		ctx = auth.AppendScopesForHost(ctx, ep.host, auth.GetScopesForHost(ctx, req.URL.Host)...)
	}
	if ep.transport != nil {
		ctx = context.WithValue(ctx, transportKey{}, ep.transport)
	}
	out := req.Clone(ctx)
	out.Host = ""
	out.URL.Scheme, out.URL.Host = ep.scheme, ep.host
	out.URL.Path = ep.path + strings.TrimPrefix(req.URL.Path, "/v2")
	if req.URL.RawPath != "" {
		out.URL.RawPath = ep.path + strings.TrimPrefix(req.URL.RawPath, "/v2")
	}
	if ep.proxy {
		q := out.URL.Query()
		q.Set("ns", name)
		out.URL.RawQuery = q.Encode()
	}
	for k, v := range ep.header {
		out.Header[k] = append(out.Header[k], v...)
	}
	if again && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("%s %s: replay the body: %w", req.Method, redact.URL(req.URL.String()), err)
		}
		out.Body = body
	}
	return out, nil
}
