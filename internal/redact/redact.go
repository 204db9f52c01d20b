// Package redact keeps credentials carried in URLs out of error messages
// and logs. A registry may redirect a blob request to storage with a
// pre-signed URL whose query string is a credential; Go's HTTP client
// quotes the whole URL in its errors, and some storage services quote it
// in their error bodies. fs/remote (range reads) and index/discover (zTOC
// and index fetches) both pass their errors through here.
package redact

import (
	"net/url"
	"regexp"
)

// URL replaces the query string of s, and drops user info and fragment.
func URL(s string) string {
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

// urlQuery matches the query string of a URL inside free text; it is
// compiled once and never changed.
var urlQuery = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>?#]*)\?[^\s"'<>#]*`)

// Text replaces the query of every URL in s.
func Text(s string) string {
	return urlQuery.ReplaceAllString(s, "${1}?REDACTED")
}

// Error hides URL queries in err: a *url.Error from the HTTP client gets a
// redacted copy of its URL, and the message of anything err wraps is
// scrubbed too. errors.Is and errors.As still see the wrapped errors.
func Error(err error) error {
	if err == nil {
		return nil
	}
	if _, done := err.(*redactedError); done {
		return err
	}
	if ue, ok := err.(*url.Error); ok {
		c := *ue
		c.URL = URL(c.URL)
		err = &c
	}
	return &redactedError{err: err}
}

// redactedError is an error whose message has no URL query.
type redactedError struct{ err error }

func (e *redactedError) Error() string { return Text(e.err.Error()) }

func (e *redactedError) Unwrap() error { return e.err }
