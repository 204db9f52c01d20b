package lazyfs

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/discover"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestNewRequiresClientAndFactory: a file system without a way to reach
// registries is refused when built, not at its first mount.
func TestNewRequiresClientAndFactory(t *testing.T) {
	factory := func(name string) (*orasremote.Repository, error) { return orasremote.NewRepository(name) }
	for name, o := range map[string]Options{
		"no range client": {Root: t.TempDir(), Discover: discover.Options{NewRepository: factory}},
		"no factory":      {Root: t.TempDir(), RangeClient: &auth.Client{}},
	} {
		if fsys, err := New(o); err == nil {
			fsys.Close()
			t.Errorf("%s: built a file system", name)
		}
	}
}

// TestBlobsUseRangeClientAndFetchOptions: blob reads go through
// RangeClient, over plain HTTP for the hosts PlainHTTP names, with the
// Fetch retry budget (here none: one request against a failing registry).
func TestBlobsUseRangeClientAndFetchOptions(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var sent atomic.Int64
	client := &auth.Client{Client: &http.Client{Transport: countingTransport{&sent}}}
	o := Options{
		RangeClient: client,
		PlainHTTP:   func(h string) bool { return h == host },
		Fetch:       FetchOptions{MaxRetries: -1},
	}
	_, err := o.Blobs().OpenBlob(context.Background(), fs.LayerRef{ImageRef: host + "/app:1", LayerDigest: digest.FromString("layer")})
	if !errors.Is(err, remote.ErrStatus) {
		t.Fatalf("open against a failing registry: %v, want remote.ErrStatus", err)
	}
	if requests.Load() != 1 || sent.Load() != 1 {
		t.Fatalf("%d requests reached the registry, %d through RangeClient; want 1 and 1", requests.Load(), sent.Load())
	}
}

type countingTransport struct{ n *atomic.Int64 }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// TestLookupAsksDiscovery: the zTOC source the file system gets is
// index/discover with the caller's options; an image pushed without an
// index is reported as index.ErrNoIndex, which the snapshotter reads as
// "let containerd pull the layer".
func TestLookupAsksDiscovery(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	layer := []byte("a layer's bytes: discovery never reads them")
	img := reg.PushImage(t, "app", [][]byte{layer}, []string{ocispec.MediaTypeImageLayer})
	var asked atomic.Int64
	src := ztocSource{discover.New(discover.Options{NewRepository: func(name string) (*orasremote.Repository, error) {
		asked.Add(1)
		repo, err := orasremote.NewRepository(name)
		if err == nil {
			repo.PlainHTTP = true
		}
		return repo, err
	}})}
	_, err := src.Lookup(context.Background(), fs.LayerRef{ImageRef: reg.Ref("app", "latest"),
		ManifestDigest: img.Digest, LayerDigest: digest.FromBytes(layer)})
	if !errors.Is(err, index.ErrNoIndex) {
		t.Fatalf("lookup in an image without an index: %v, want index.ErrNoIndex", err)
	}
	if asked.Load() == 0 {
		t.Fatal("the repository factory of the options was not used")
	}
}
