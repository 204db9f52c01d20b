package regtest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenAuth checks the token server against a real distribution
// registry: anonymous requests are challenged with the server's realm, a
// client with the password gets tokens scoped to one repository, a wrong
// password gets none, and a token is refused once its TTL has passed
// (distribution's 60 s leeway is taken out of exp).
func TestTokenAuth(t *testing.T) {
	ts := StartTokenServer(t, "bob", "pw", 2*time.Second)
	r := StartWithTokenAuth(t, ts)

	resp, err := http.Get("http://" + r.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ch := resp.Header.Get("Www-Authenticate"); resp.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(ch, `realm="`+ts.URL+`"`) {
		t.Fatalf("anonymous GET /v2/: %d %q, want 401 with realm %s", resp.StatusCode, ch, ts.URL)
	}

	desc := r.PushImage(t, "app", [][]byte{smallLayer(t, "a.txt", "hello")}, nil)
	for _, tok := range ts.Issued() {
		for _, s := range tok.Scopes {
			if !strings.HasPrefix(s, "repository:app:") {
				t.Errorf("token for a push to app carries scope %q", s)
			}
		}
	}

	// A token is reused until the registry refuses it, then renewed.
	ctx := context.Background()
	before := len(r.Requests(t))
	repo := r.Repository(t, "app")
	if _, err := repo.Resolve(ctx, "latest"); err != nil {
		t.Fatalf("resolve with a token: %v", err)
	}
	n := len(ts.Issued())
	if _, err := repo.Resolve(ctx, "latest"); err != nil || len(ts.Issued()) != n {
		t.Fatalf("second resolve within the TTL: err %v, tokens %d -> %d; want the cached token reused", err, n, len(ts.Issued()))
	}
	time.Sleep(ts.TTL + 500*time.Millisecond)
	got, err := repo.Resolve(ctx, "latest")
	if err != nil || got.Digest != desc.Digest {
		t.Fatalf("resolve after the TTL: %v, %v", got.Digest, err)
	}
	if len(ts.Issued()) != n+1 {
		t.Errorf("tokens issued after the TTL passed: %d, want 1 more than %d", len(ts.Issued()), n)
	}
	var refused int
	for _, req := range r.Requests(t)[before:] {
		if req.Status == http.StatusUnauthorized && strings.Contains(req.Path, "/manifests/latest") {
			refused++
		}
	}
	// The first resolve's challenge, and the expired token.
	if refused != 2 {
		t.Errorf("registry refused %d manifest requests, want 2 (challenge, expired token)", refused)
	}

	wrong := *r
	wrong.Password = "nope"
	if _, err := wrong.Repository(t, "app").Resolve(ctx, "latest"); err == nil {
		t.Error("resolve with a wrong password succeeded")
	}
}
