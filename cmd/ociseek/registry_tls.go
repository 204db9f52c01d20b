package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"net/http"
	"strings"
	"sync"
	"time"
)

// addTLSFlags registers the certificate options ctr and nerdctl users
// know: ctr's --skip-verify/-k, and nerdctl's --insecure-registry (no
// certificate check, and plain HTTP for a registry that turns out not to
// speak HTTPS).
func (r *registryFlags) addTLSFlags(fs *flag.FlagSet) {
	fs.BoolVar(&r.skipVerify, "skip-verify", false, "do not check the registry's TLS certificate (as ctr --skip-verify)")
	fs.BoolVar(&r.skipVerify, "k", false, "shorthand for --skip-verify")
	fs.BoolVar(&r.insecure, "insecure-registry", false,
		"do not check the registry's TLS certificate, and use plain HTTP for a registry that does not speak HTTPS (as nerdctl --insecure-registry)")
}

// transport returns the transport under registry requests: nil (Go's
// default) unless --skip-verify or --insecure-registry turn the
// certificate check off.
func (r *registryFlags) transport() http.RoundTripper {
	if !r.skipVerify && !r.insecure {
		return nil
	}
	var t *http.Transport
	if d, ok := http.DefaultTransport.(*http.Transport); ok {
		t = d.Clone()
	} else {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	t.TLSClientConfig.InsecureSkipVerify = true
	return t
}

// httpProbeTimeout bounds the HTTPS probe of --insecure-registry.
const httpProbeTimeout = 10 * time.Second

// schemeCache remembers, per host, whether it speaks only plain HTTP.
type schemeCache struct {
	mu    sync.Mutex
	hosts map[string]bool
}

// speaksOnlyHTTP says whether host answers an HTTPS request with
// something that is not TLS (an HTTP server), the case where nerdctl's
// --insecure-registry falls back to plain HTTP. It asks once per host and
// command. The scheme is chosen before any credentials are sent, rather
// than by a transport falling back per request, because oras refuses to
// answer a challenge that comes from another scheme than the request's.
func (r *registryFlags) speaksOnlyHTTP(host string) bool {
	r.httpOnly.mu.Lock()
	defer r.httpOnly.mu.Unlock()
	if v, ok := r.httpOnly.hosts[host]; ok {
		return v
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpProbeTimeout)
	defer cancel()
	only := false
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err == nil {
		var resp *http.Response
		resp, err = (&http.Client{Transport: r.transport()}).Do(req)
		if err == nil {
			drainClose(resp)
		}
		only = notTLS(err)
	}
	if r.httpOnly.hosts == nil {
		r.httpOnly.hosts = map[string]bool{}
	}
	r.httpOnly.hosts[host] = only
	return only
}

// notTLS says err is a TLS handshake that met a server speaking something
// else: the first bytes were no TLS record (Go's client then notes the
// server gave an HTTP response).
func notTLS(err error) bool {
	var rh tls.RecordHeaderError
	return err != nil && (errors.As(err, &rh) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"))
}
