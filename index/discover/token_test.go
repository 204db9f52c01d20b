package discover

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestDiscoverTokenAuth finds a v1 index kept in a separate index
// repository of a distribution registry with `auth: token` (2 s tokens,
// each for the repository asked), then fetches a layer's zTOC after the
// tokens have expired, with a fresh Discoverer (no cached result) and with
// the same one. Every token the discoverer asked for names one repository.
func TestDiscoverTokenAuth(t *testing.T) {
	ts := regtest.StartTokenServer(t, "dave", "pw", 2*time.Second)
	r := regtest.StartWithTokenAuth(t, ts)
	img := pushImage(t, r, "app", "latest", nil, "a.txt", "b.txt")
	want := pushV1(t, r, "app-soci", img, nil)

	cred := auth.Credential{Username: "dave", Password: "pw"}
	client := &auth.Client{Client: http.DefaultClient, Cache: auth.NewCache(),
		Credential: func(context.Context, string) (auth.Credential, error) { return cred, nil }}
	factory := func(name string) (*orasremote.Repository, error) {
		repo, err := DefaultRepository(name)
		if err == nil {
			repo.Client = client
		}
		return repo, err
	}
	opts := Options{NewRepository: factory, IndexRepos: map[string]string{r.Host + "/app": r.Host + "/app-soci"}}
	ref := r.Ref("app", "latest")
	ctx := ctxT(t)

	start := time.Now()
	d := New(opts)
	res, err := d.Find(ctx, ref, img.manifest.Digest, "")
	if err != nil || res.Descriptor.Digest != want.Digest {
		t.Fatalf("Find with tokens: %v, %v; want index %s", res, err, want.Digest)
	}
	time.Sleep(ts.TTL + 500*time.Millisecond)
	layer1 := digest.FromBytes(img.layers[1])
	if _, err := d.LayerZtoc(ctx, ref, img.manifest.Digest, "", layer1); err != nil {
		t.Fatalf("LayerZtoc after the tokens expired: %v", err)
	}
	if res, err := New(opts).Find(ctx, ref, img.manifest.Digest, ""); err != nil || res.Descriptor.Digest != want.Digest {
		t.Fatalf("Find by a new discoverer after the tokens expired: %v, %v", res, err)
	}

	n := 0
	for _, tok := range ts.Issued() {
		if tok.Issued.Before(start) {
			continue
		}
		n++
		repos := map[string]bool{}
		for _, s := range tok.Scopes {
			name := strings.TrimPrefix(s, "repository:")
			repos[name[:strings.LastIndex(name, ":")]] = true
		}
		if len(repos) != 1 {
			t.Errorf("discovery asked for a token of scopes %q, want one repository", tok.Scopes)
		}
	}
	// At least: the image and index repositories before the TTL, and a
	// renewal after it.
	if n < 3 {
		t.Errorf("discovery took %d tokens, want at least 3", n)
	}
}
