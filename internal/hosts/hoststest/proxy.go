// Package hoststest has test helpers for registry host configuration:
// counting reverse proxies in front of real registries (as mirrors, over
// HTTP or TLS, with a client certificate demanded, under an overridden API
// path, or going down in the middle of a transfer), a throwaway CA, and
// hosts.toml files. It is imported only by _test.go files.
package hoststest

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// ProxyOptions shape a Proxy.
type ProxyOptions struct {
	// TLS serves HTTPS with this configuration (its certificate, and
	// ClientAuth/ClientCAs to demand a client certificate); nil: HTTP.
	TLS *tls.Config
	// Prefix is the API root clients use instead of "/v2" (a host with
	// override_path); requests under it are sent on under "/v2".
	Prefix string
	// DieAfter, when positive, makes the proxy cut every connection and
	// stop listening once it has sent that many body bytes: a mirror that
	// goes down in the middle of a transfer.
	DieAfter int64
}

// Request is what a Proxy saw of one request.
type Request struct {
	Method, Path, RawQuery string
	Header                 http.Header
}

// Proxy is a reverse proxy on 127.0.0.1 in front of a registry, counting
// the body bytes it sends back.
type Proxy struct {
	// Host is "127.0.0.1:<port>".
	Host string
	// URL is "http://Host" or "https://Host".
	URL string

	target string
	opts   ProxyOptions
	srv    *httptest.Server
	bytes  atomic.Int64
	limit  atomic.Int64 // DieAfter, or SetDieAfter's
	once   sync.Once

	mu       sync.Mutex
	requests []Request
}

// StartProxy starts a proxy in front of the plain-HTTP registry at target
// ("host:port"); it stops when the test ends.
func StartProxy(t testing.TB, target string, opts ProxyOptions) *Proxy {
	t.Helper()
	p := &Proxy{target: target, opts: opts}
	p.limit.Store(opts.DieAfter)
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	if opts.TLS != nil {
		p.srv.TLS = opts.TLS
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	p.URL = p.srv.URL
	p.Host = strings.TrimPrefix(strings.TrimPrefix(p.URL, "https://"), "http://")
	t.Cleanup(p.Stop)
	return p
}

// Bytes returns the body bytes sent to clients so far.
func (p *Proxy) Bytes() int64 { return p.bytes.Load() }

// Requests returns the requests seen so far.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.requests...)
}

// SetDieAfter makes the proxy go down, as with ProxyOptions.DieAfter, once
// it has sent n more body bytes than so far.
func (p *Proxy) SetDieAfter(n int64) { p.limit.Store(p.bytes.Load() + n) }

// Stop cuts every connection, in the middle of a transfer or not, and
// stops listening. Stopping twice does nothing.
func (p *Proxy) Stop() {
	p.once.Do(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests = append(p.requests, Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone()})
	p.mu.Unlock()
	path := r.URL.Path
	if p.opts.Prefix != "" {
		rest, ok := strings.CutPrefix(path, p.opts.Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		path = "/v2" + rest
	}
	u := "http://" + p.target + path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.ContentLength = r.ContentLength
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		if k == "Location" {
			// The registry names itself in upload locations.
			for i := range v {
				v[i] = strings.Replace(v[i], "http://"+p.target, p.URL, 1)
			}
		}
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	p.copyBody(w, resp.Body)
}

// copyBody sends the answer's body, counting it, and dies at DieAfter.
func (p *Proxy) copyBody(w http.ResponseWriter, body io.Reader) {
	buf := make([]byte, 16<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if limit := p.limit.Load(); limit > 0 {
				left := limit - p.bytes.Load()
				if left <= 0 {
					go p.Stop()
					return
				}
				chunk = chunk[:min(int64(n), left)]
			}
			// Counted before it is sent: a client that has read it all
			// must find it counted.
			p.bytes.Add(int64(len(chunk)))
			if _, werr := w.Write(chunk); werr != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// WriteHosts writes hosts.toml for registry host upstream under dir (a
// containerd config_path) and returns the file's path.
func WriteHosts(t testing.TB, dir, upstream, content string) string {
	t.Helper()
	d := filepath.Join(dir, hostDir(upstream))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d, "hosts.toml")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// hostDir is containerd's directory name for host ("h:p" → "h_p_").
func hostDir(host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}
