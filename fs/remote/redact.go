package remote

import (
	"errors"
	"fmt"
	"net/http"

	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/redact"
)

// ErrInsecureRedirect reports a redirect from HTTPS to plain HTTP. Such a
// redirect would send a pre-signed URL (a credential) and the layer bytes
// in clear text; it is refused, not retried.
var ErrInsecureRedirect = errors.New("redirect from HTTPS to plain HTTP refused")

// maxRedirects is Go's default redirect limit, kept when CheckRedirect
// replaces the default policy.
const maxRedirects = 10

// CheckRedirect is an http.Client.CheckRedirect policy for registry
// clients: Go's default (at most 10 redirects), and no redirect from HTTPS
// to plain HTTP. The error names the hosts only, never the target's query.
// Open applies it to the client it is given when it can (*http.Client,
// *auth.Client); the daemon sets it on its shared client so that index
// discovery follows the same rule.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	for _, prev := range via {
		if prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: from https://%s to %s://%s", ErrInsecureRedirect, prev.URL.Host, req.URL.Scheme, req.URL.Host)
		}
	}
	return nil
}

// guardRedirects returns client with CheckRedirect added before its own
// redirect policy, for the client types it knows; others are returned as
// they are (get still refuses a plain-HTTP final URL after the fact).
func guardRedirects(client Doer) Doer {
	switch c := client.(type) {
	case *http.Client:
		return guardHTTP(c)
	case *auth.Client:
		cc := *c // shares the token cache and credentials
		cc.Client = guardHTTP(c.Client)
		return &cc
	}
	return client
}

func guardHTTP(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := CheckRedirect(req, via); err != nil {
			return err
		}
		if prev != nil {
			return prev(req, via)
		}
		return nil
	}
	return &cc
}

// The redaction itself lives in internal/redact, shared with index/discover.
func redactURL(s string) string { return redact.URL(s) }

func redactText(s string) string { return redact.Text(s) }

func redactError(err error) error { return redact.Error(err) }
