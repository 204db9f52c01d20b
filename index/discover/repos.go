package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/ociseek/ociseek/index"
)

// maxReferrerPages bounds referrers pagination: a SOCI index per page is
// plenty, and a registry looping on Link headers must not hang a lookup.
const maxReferrerPages = 64

// zeroDigest is the subject of the capability probe; no manifest has it.
const zeroDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// RepositoryFactory returns the client of one repository, named "host/repo".
type RepositoryFactory func(name string) (*orasremote.Repository, error)

// DefaultRepository is the RepositoryFactory used when none is given:
// anonymous access, plain HTTP as DefaultPlainHTTP says.
func DefaultRepository(name string) (*orasremote.Repository, error) {
	repo, err := orasremote.NewRepository(name)
	if err != nil {
		return nil, err
	}
	repo.PlainHTTP = DefaultPlainHTTP(repo.Reference.Registry)
	return repo, nil
}

// DefaultPlainHTTP reports whether a registry host ("host[:port]") is
// reached over plain HTTP when nothing says otherwise: loopback hosts
// (localhost, 127.0.0.0/8, ::1) are, as the reference tooling does for
// localhost, and every other host gets HTTPS. Commands that take a
// --plain-http flag fall back to it.
func DefaultPlainHTTP(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(name, "[]"))
	return ip != nil && ip.IsLoopback()
}

// repoEntry is one repository client with the referrers capability this
// package decided for it.
type repoEntry struct {
	repo *orasremote.Repository
	name string

	mu      sync.Mutex // guards decided and api; serialises probes of one repository
	decided bool
	api     bool // the referrers API is usable (valid once decided)
}

// apiSupported reports the decided capability.
func (e *repoEntry) apiSupported() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.decided && e.api
}

// repoCache keeps one client per repository for the Discoverer's life, so
// the capability learned by oras (and by probe) is kept.
type repoCache struct {
	factory RepositoryFactory

	mu    sync.Mutex // guards repos
	repos map[string]*repoEntry
}

func newRepoCache(f RepositoryFactory) *repoCache {
	return &repoCache{factory: f, repos: make(map[string]*repoEntry)}
}

func (c *repoCache) get(name string) (*repoEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.repos[name]; ok {
		return e, nil
	}
	repo, err := c.factory(name)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", name, err)
	}
	if repo.ReferrerListMaxPages == 0 {
		repo.ReferrerListMaxPages = maxReferrerPages
	}
	if repo.MaxMetadataBytes == 0 || repo.MaxMetadataBytes > index.MaxSize {
		repo.MaxMetadataBytes = index.MaxSize
	}
	e := &repoEntry{repo: repo, name: name}
	c.repos[name] = e
	return e, nil
}

// probe decides, once per repository, whether the referrers API is usable
// and tells oras, so that its Referrers goes straight to the API or to the
// fallback tag. oras alone would fail on a 400 or on an error page reached
// by redirect; those mean "unavailable" here. A NAME_UNKNOWN answer
// (repository missing) and transport errors decide nothing: the next lookup
// probes again.
func (e *repoEntry) probe(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.decided {
		return nil
	}
	supported, err := e.probeAPI(ctx)
	if err != nil {
		return err
	}
	// The state may already be set by oras (e.g. by an earlier push through
	// this client); that answer is as good as ours.
	_ = e.repo.SetReferrersCapability(supported)
	e.decided, e.api = true, supported
	return nil
}

func (e *repoEntry) probeAPI(ctx context.Context) (bool, error) {
	ref := e.repo.Reference
	ref.Reference = zeroDigest
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
	scheme := "https"
	if e.repo.PlainHTTP {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s/v2/%s/referrers/%s", scheme, ref.Host(), ref.Repository, zeroDigest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	client := e.repo.Client
	if client == nil {
		client = auth.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("probe referrers API of %s: %w", e.name, err)
	}
	defer resp.Body.Close()
	// Read a bounded prefix only: the body matters just for error codes.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.Request != nil && resp.Request.URL.Host != ref.Host() {
		return false, nil // redirected elsewhere (a login page)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp.Header.Get("Content-Type") == ocispec.MediaTypeImageIndex, nil
	case resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), errcode.ErrorCodeNameUnknown):
		return false, fmt.Errorf("probe referrers API of %s: repository not found: %w", e.name, errdef.ErrNotFound)
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusBadRequest:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return false, fmt.Errorf("probe referrers API of %s: access denied (HTTP %d): %w", e.name, resp.StatusCode, index.ErrUnauthorized)
	}
	return false, fmt.Errorf("probe referrers API of %s: unexpected HTTP %d", e.name, resp.StatusCode)
}

// apiUnavailable reports whether a referrers call failed in a way that means
// the API cannot be used for this request, so the fallback tag applies.
func apiUnavailable(err error, host string) bool {
	if errors.Is(err, errdef.ErrUnsupported) {
		return true
	}
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	if er.URL != nil && er.URL.Host != host {
		return true // answered by another host after a redirect
	}
	switch er.StatusCode {
	case http.StatusBadRequest:
		return true
	case http.StatusNotFound:
		return !hasCode(er, errcode.ErrorCodeNameUnknown)
	}
	return false
}

func hasCode(er *errcode.ErrorResponse, code string) bool {
	for _, e := range er.Errors {
		if e.Code == code {
			return true
		}
	}
	return false
}

// isNotFound reports an answer meaning "no such manifest/blob/repository".
func isNotFound(err error) bool {
	if errors.Is(err, errdef.ErrNotFound) {
		return true
	}
	var er *errcode.ErrorResponse
	return errors.As(err, &er) && er.StatusCode == http.StatusNotFound
}
