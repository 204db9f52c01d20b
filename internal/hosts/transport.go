package hosts

import "net/http"

// transportKey carries, in a request's context, the transport of the host
// the request was rewritten for.
type transportKey struct{}

// Transport returns the round tripper for the bottom of a client stack
// whose top is a Client of h: each request goes through the transport of
// the configured host it was rewritten for (its TLS settings and dialer),
// every other request through Options.NewTransport's. Layers in between
// (oras' auth and retry) keep the request's context, so their token
// requests and the redirects they follow use the host's transport too.
func (h *Hosts) Transport() http.RoundTripper { return router{h} }

type router struct{ h *Hosts }

// RoundTrip implements http.RoundTripper.
func (r router) RoundTrip(req *http.Request) (*http.Response, error) {
	if t, ok := req.Context().Value(transportKey{}).(http.RoundTripper); ok {
		return t.RoundTrip(req)
	}
	return r.h.base.RoundTrip(req)
}

// baseTransport is the transport of requests without a host's own.
type baseTransport struct{ http.RoundTripper }

// CloseIdleConnections closes the idle connections of the transport, if
// it keeps any.
func (b *baseTransport) CloseIdleConnections() {
	if c, ok := b.RoundTripper.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// CloseIdleConnections closes the idle connections of every transport,
// as http.Client.CloseIdleConnections expects of its transport.
func (r router) CloseIdleConnections() {
	r.h.base.CloseIdleConnections()
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	for _, e := range r.h.entries {
		closeIdle(e.endpoints)
	}
}
