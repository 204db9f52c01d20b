package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"

	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/ociseek/ociseek/index/discover"
	"github.com/ociseek/ociseek/internal/hosts"
)

// registryFlags are the registry options shared by every verb that talks to
// a registry.
type registryFlags struct {
	fs        *flag.FlagSet
	plainHTTP bool
	user      string
	// skipVerify and insecure are --skip-verify and --insecure-registry
	// (see transport); httpOnly caches speaksOnlyHTTP's answers.
	skipVerify, insecure bool
	httpOnly             schemeCache
	// hostsDir is --hosts-dir; hostsCfg its configuration, made once
	// (see hosts).
	hostsDir string
	hostsCfg *hosts.Hosts
	// client is made once per command so every repository of a run shares
	// the token cache and the credential lookup.
	client *auth.Client
}

// addRegistryFlags registers --plain-http, --user/-u, --skip-verify/-k,
// --insecure-registry and --hosts-dir on fs.
func addRegistryFlags(fs *flag.FlagSet) *registryFlags {
	r := &registryFlags{fs: fs}
	fs.BoolVar(&r.plainHTTP, "plain-http", false,
		"talk HTTP, not HTTPS, to the registry (default: on for localhost and 127.0.0.0/8, off elsewhere)")
	fs.StringVar(&r.user, "user", "",
		"registry credentials as `USER:PASSWORD` (default: the docker config file and its credential helpers)")
	fs.StringVar(&r.user, "u", "", "shorthand for --user")
	r.addTLSFlags(fs)
	r.addHostsFlag(fs)
	return r
}

// plainHTTPFor says whether to use HTTP for host: as given by --plain-http
// when it was set, else, under --insecure-registry, whether host answers
// HTTPS at all, else discover's default (loopback hosts only).
func (r *registryFlags) plainHTTPFor(host string) bool {
	set := false
	r.fs.Visit(func(f *flag.Flag) { set = set || f.Name == "plain-http" })
	if set {
		return r.plainHTTP
	}
	if r.insecure {
		return r.speaksOnlyHTTP(host)
	}
	return discover.DefaultPlainHTTP(host)
}

// authClient returns the HTTP client with credentials: --user for every
// registry, or the docker config file (DOCKER_CONFIG or ~/.docker) with its
// credential helpers.
func (r *registryFlags) authClient() (*auth.Client, error) {
	if r.client != nil {
		return r.client, nil
	}
	c := &auth.Client{Cache: auth.NewCache(), Header: http.Header{"User-Agent": {"ociseek"}}}
	source := "--user"
	if r.user != "" {
		name, pass, ok := strings.Cut(r.user, ":")
		if !ok || name == "" {
			return nil, usagef("--user: want USER:PASSWORD")
		}
		cred := auth.Credential{Username: name, Password: pass}
		c.Credential = func(context.Context, string) (auth.Credential, error) { return cred, nil }
	} else {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("read docker credentials: %w", err)
		}
		c.Credential = credentials.Credential(store)
		source = "the docker config file ($DOCKER_CONFIG or ~/.docker)"
	}
	c.Client = r.httpClient(authErrors{next: retry.NewTransport(r.hosts().Transport()), credential: c.Credential, source: source})
	r.client = c
	return c, nil
}

// errAuthFailed marks a registry refusing the CLI's credentials, or
// demanding some the CLI does not have.
var errAuthFailed = errors.New("authentication failed")

// authErrors is the transport under the CLI's auth client. It turns the
// two ways basic authentication fails into errors that name the registry
// and say where credentials come from; oras alone reports a bare "401" or
// "basic credential not found". It ends the request at once, which is
// right for a short-lived command: the credentials will not change during
// it, so neither oras's second attempt nor the caller's next request
// could succeed. Bearer-token failures pass through: an expired token is
// answered by oras fetching a fresh one.
type authErrors struct {
	next       http.RoundTripper
	credential auth.CredentialFunc
	source     string // where credentials come from, for the message
}

// RoundTrip implements http.RoundTripper.
func (t authErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	host := req.URL.Host
	sent, _, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	challenge, _, _ := strings.Cut(resp.Header.Get("Www-Authenticate"), " ")
	switch {
	case strings.EqualFold(sent, "basic"):
		// Also the token endpoint of a bearer registry refusing the
		// credentials that should buy a token.
		drainClose(resp)
		return nil, fmt.Errorf("registry %s: %w: it refused the user and password from %s", host, errAuthFailed, t.source)
	case sent == "" && strings.EqualFold(challenge, "basic"):
		cred, cerr := t.credential(req.Context(), host)
		if cerr == nil && cred == auth.EmptyCredential {
			drainClose(resp)
			return nil, fmt.Errorf("registry %s: %w: it demands a user and password, and %s has none for it "+
				"(pass --user USER:PASSWORD, or run docker login %s)", host, errAuthFailed, t.source, host)
		}
	}
	return resp, nil
}

// drainClose reads a bounded rest of an answer we do not use, so the
// connection can be reused, and closes it.
func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// repository returns the client of the repository named by ref
// ("host/repo[:tag|@digest]") and the tag or digest part ("" when absent).
func (r *registryFlags) repository(ref string) (*orasremote.Repository, string, error) {
	repo, err := orasremote.NewRepository(ref)
	if err != nil {
		return nil, "", usagef("reference %q: %v", ref, err)
	}
	client, err := r.authClient()
	if err != nil {
		return nil, "", err
	}
	repo.Client = r.hosts().Client(client)
	repo.PlainHTTP = r.plainHTTPFor(repo.Reference.Registry)
	tagOrDigest := repo.Reference.Reference
	return repo, tagOrDigest, nil
}

// factory adapts repository to index/discover's RepositoryFactory.
func (r *registryFlags) factory(name string) (*orasremote.Repository, error) {
	repo, _, err := r.repository(name)
	return repo, err
}

// withoutRetries returns a copy of the CLI's auth client whose transport
// does not retry. fs/remote retries range reads itself, with a budget per
// range; oras's retry transport underneath would multiply the requests.
func withoutRetries(c *auth.Client) *auth.Client {
	cp := *c
	hc := *c.Client
	if ae, ok := hc.Transport.(authErrors); ok {
		if rt, ok := ae.next.(*retry.Transport); ok {
			ae.next = rt.Base
			if ae.next == nil {
				ae.next = http.DefaultTransport
			}
		}
		hc.Transport = ae
	}
	cp.Client = &hc
	return &cp
}
