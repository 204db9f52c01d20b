package remote

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"

	"oras.land/oras-go/v2/registry/remote/auth"
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

// redactURL replaces the query string, which for pre-signed URLs is a
// credential, and drops user info and fragment.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "REDACTED", false
	}
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	return u.String()
}

// urlQuery matches the query string of a URL inside free text.
var urlQuery = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>?#]*)\?[^\s"'<>#]*`)

// redactText replaces the query of every URL in s.
func redactText(s string) string {
	return urlQuery.ReplaceAllString(s, "${1}?REDACTED")
}

// redactError hides URL queries in err: a *url.Error from the HTTP client
// (which keeps the full URL, and after a redirect that is the storage
// URL with its signature) gets a redacted copy, and the message of
// anything it wraps is scrubbed too. errors.Is and errors.As still see
// the wrapped errors.
func redactError(err error) error {
	if err == nil {
		return nil
	}
	if ue, ok := err.(*url.Error); ok {
		c := *ue
		c.URL = redactURL(c.URL)
		err = &c
	}
	return &redactedError{err: err}
}

// redactedError is an error whose message has no URL query.
type redactedError struct{ err error }

func (e *redactedError) Error() string { return redactText(e.err.Error()) }

func (e *redactedError) Unwrap() error { return e.err }
