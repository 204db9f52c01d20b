package crikeychain

import (
	"context"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// TestRotatingCacheForgetsTokens: a basic-auth token (base64 of the
// pull's user:password) is served from the cache within its period and
// gone after it, so the auth client asks the keychain again.
func TestRotatingCacheForgetsTokens(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := NewRotatingCache(3*time.Hour, clk.Now)
	ctx := context.Background()
	fetch := func(context.Context) (string, error) { return "YWxpY2U6cHc=", nil }
	if _, err := c.Set(ctx, "registry.example", auth.SchemeBasic, "", fetch); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3*time.Hour - time.Second)
	if tok, err := c.GetToken(ctx, "registry.example", auth.SchemeBasic, ""); err != nil || tok != "YWxpY2U6cHc=" {
		t.Fatalf("within the period: token %q, %v", tok, err)
	}
	clk.Advance(time.Second)
	if tok, err := c.GetToken(ctx, "registry.example", auth.SchemeBasic, ""); err == nil {
		t.Errorf("after the period the cache still holds %q", tok)
	}
	if s, err := c.GetScheme(ctx, "registry.example"); err == nil {
		t.Errorf("after the period the cache still knows scheme %v", s)
	}
}
