package remote

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// secret is the signature of the pre-signed storage URLs below; no error
// may show it.
const secret = "X-Amz-Signature=d0e4c0ffee5ecret"

// redirectingRegistry is an HTTPS registry whose blob URLs redirect to
// target (with a signed query).
func redirectingRegistry(t *testing.T, target string) *httptest.Server {
	t.Helper()
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+"/bucket/blob?X-Amz-Expires=900&"+secret, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(reg.Close)
	return reg
}

// TestHTTPSToHTTPRedirectRefused: a registry on HTTPS that redirects to
// plain HTTP is refused before the plain request is sent, whichever client
// type Open is given, and the error names both hosts but not the query.
func TestHTTPSToHTTPRedirectRefused(t *testing.T) {
	data := randBytes(30, 1000)
	p := newFaultProxy(t, data)
	reg := redirectingRegistry(t, p.srv.URL)
	host := strings.TrimPrefix(reg.URL, "https://")
	for name, client := range map[string]Doer{
		"http.Client": reg.Client(),
		"auth.Client": &auth.Client{Client: reg.Client()},
		// A Doer Open cannot guard: the request is sent, the answer refused.
		"other Doer": struct{ Doer }{reg.Client()},
	} {
		t.Run(name, func(t *testing.T) {
			p.set(nil)
			opts := faultOpts(3)
			opts.RateWindow = okWindow
			_, err := Open(context.Background(), client, host+"/repo", digest.FromBytes(data), opts)
			if !errors.Is(err, ErrInsecureRedirect) {
				t.Fatalf("Open: %v, want ErrInsecureRedirect", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "https://"+host) || !strings.Contains(msg, "http://"+p.host()) {
				t.Fatalf("error does not name both hosts: %v", msg)
			}
			if strings.Contains(msg, secret) {
				t.Fatalf("error shows the signed query: %v", msg)
			}
			want := int64(0)
			if name == "other Doer" {
				want = 1
			}
			if n := p.requests.Load(); n != want {
				t.Fatalf("%d plain-HTTP requests sent, want %d (and no retry)", n, want)
			}
		})
	}
	// The policy, as the daemon sets it on its shared client.
	c := &http.Client{Transport: reg.Client().Transport, CheckRedirect: CheckRedirect}
	resp, err := c.Get(reg.URL + "/v2/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrInsecureRedirect) {
		t.Fatalf("CheckRedirect: %v", err)
	}
}

// TestSignedQueryNotInErrors: the storage a registry redirects to fails in
// each way it can (error status quoting the URL, reset before an answer,
// stall); the read fails and no error text shows the signature.
func TestSignedQueryNotInErrors(t *testing.T) {
	data := randBytes(31, 100_000)
	var mode atomic.Value
	storage := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "ok":
			http.ServeContent(w, r, "blob", time.Time{}, strings.NewReader(string(data)))
		case "403":
			// S3 quotes the request in its error document.
			http.Error(w, "<Error><Code>AccessDenied</Code><URL>https://"+r.Host+r.URL.String()+"</URL></Error>", http.StatusForbidden)
		case "reset":
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		case "stall":
			<-r.Context().Done()
		}
	}))
	t.Cleanup(storage.Close)
	reg := redirectingRegistry(t, storage.URL)
	host := strings.TrimPrefix(reg.URL, "https://")
	// One client trusting both test certificates (they share the CA).
	client := reg.Client()
	opts := faultOpts(1)
	opts.RateWindow = okWindow // the good probe must not pass for a stall
	for _, m := range []string{"403", "reset", "stall"} {
		t.Run(m, func(t *testing.T) {
			// Failing in the probe (nothing cached yet).
			mode.Store(m)
			_, err := Open(context.Background(), client, host+"/repo", digest.FromBytes(data), opts)
			checkRedacted(t, "open", err)
			// Failing a read after the signed URL was cached.
			mode.Store("ok")
			b, err := Open(context.Background(), client, host+"/repo", digest.FromBytes(data), opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			mode.Store(m)
			_, err = readAll(t, context.Background(), b, data, 0, 50_000)
			checkRedacted(t, "read", err)
		})
	}
}

func checkRedacted(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded against failing storage", what)
	}
	if strings.Contains(err.Error(), "d0e4c0ffee") {
		t.Fatalf("%s error shows the signed query: %v", what, err)
	}
	t.Logf("%s: %v", what, err)
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		`Get "https://s3.example/b/k?X-Amz-Signature=abc&x=1": EOF`: `Get "https://s3.example/b/k?REDACTED": EOF`,
		"GET http://h:5000/v2/r/blobs/sha256:1 failed":              "GET http://h:5000/v2/r/blobs/sha256:1 failed",
		"<URL>https://h/p?sig=1</URL> and http://x/?a#f":            "<URL>https://h/p?REDACTED</URL> and http://x/?REDACTED#f",
	} {
		if got := redactText(in); got != want {
			t.Errorf("redactText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := redactURL("https://u:p@h/p?sig=1#frag"); got != "https://h/p?REDACTED" {
		t.Errorf("redactURL = %q", got)
	}
}
