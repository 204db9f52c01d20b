package discover

import (
	"context"
	"errors"
	"sync"
	"testing"

	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestUnauthorized: a registry that refuses the discoverer (no
// credentials, then wrong ones) gives an error wrapping ErrUnauthorized,
// not ErrNoIndex, and the refusal is not cached: once credentials arrive
// (a CRI pull that carries them, a docker login) the next lookup finds
// the index, with no wait for the negative TTL.
func TestUnauthorized(t *testing.T) {
	r := regtest.StartWithAuth(t, "alice", "s3cret")
	plain := pushImage(t, r, "app", "plain", nil, "a.txt")
	v2 := pushIndex(t, r, "app", index.NewV2(ztocsFor(t, r, "app", plain.layers), nil))
	img := pushImage(t, r, "app", "soci", map[string]string{index.AnnotationIndexDigest: v2.Digest.String()}, "a.txt")

	var mu sync.Mutex
	var cred auth.Credential
	client := &auth.Client{Cache: auth.NewCache(), Credential: func(context.Context, string) (auth.Credential, error) {
		mu.Lock()
		defer mu.Unlock()
		return cred, nil
	}}
	setCred := func(c auth.Credential) {
		mu.Lock()
		defer mu.Unlock()
		cred = c
	}
	d, _ := newDiscoverer(Options{NewRepository: func(name string) (*remote.Repository, error) {
		repo, err := remote.NewRepository(name)
		if err != nil {
			return nil, err
		}
		repo.Client, repo.PlainHTTP = client, true
		return repo, nil
	}})
	ref := r.Ref("app", "soci")
	for _, c := range []struct {
		name string
		cred auth.Credential
	}{
		{"no credentials", auth.EmptyCredential},
		{"wrong password", auth.Credential{Username: "alice", Password: "wrong"}},
	} {
		setCred(c.cred)
		_, err := d.Find(ctxT(t), ref, img.manifest.Digest, "")
		if !errors.Is(err, index.ErrUnauthorized) || errors.Is(err, index.ErrNoIndex) {
			t.Errorf("%s: Find err = %v; want ErrUnauthorized (and not ErrNoIndex)", c.name, err)
		}
	}
	setCred(auth.Credential{Username: "alice", Password: "s3cret"})
	res, err := d.Find(ctxT(t), ref, img.manifest.Digest, "")
	if err != nil || res.Descriptor.Digest != v2.Digest {
		t.Fatalf("with credentials, at once: Find = %v, %v; want %s (a refusal must not be cached)", res, err, v2.Digest)
	}
}
