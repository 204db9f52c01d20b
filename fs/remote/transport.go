package remote

import (
	"net"
	"net/http"
	"time"
)

// NewTransport returns an HTTP transport suited to lazy loading's range
// reads, for the client handed to Open (wrapped by oras' auth.Client, but
// not by a retrying transport: Blob retries by itself, and a second layer
// multiplies the requests).
//
// Why not http.DefaultTransport: it keeps only two idle connections per
// host, while fetch-ahead keeps several spans in flight per layer and all
// layers of an image come from one registry host; every request beyond the
// second would dial again (for HTTPS, a new TLS handshake of a few round
// trips) on the latency path of a read. Transparent gzip is off as well: a
// span's bytes must reach the digest check exactly as stored.
func NewTransport() *http.Transport {
	var t *http.Transport
	if d, ok := http.DefaultTransport.(*http.Transport); ok {
		t = d.Clone()
	} else {
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.DisableCompression = true
	// Span bodies are read in 64 KiB pieces; a matching buffer halves the
	// read calls for HTTP/1.1 bodies.
	t.ReadBufferSize = 64 << 10
	return t
}
