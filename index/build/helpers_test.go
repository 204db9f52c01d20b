package build_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// testSpan keeps zTOCs small and gives each test layer several spans.
const testSpan = 64 << 10

// fastPublish settles quickly: on 127.0.0.1 a read-modify-write of the
// fallback tag takes milliseconds.
var fastPublish = build.PublishOptions{Settle: 300 * time.Millisecond}

// tarGz returns a gzip tar layer of n files of mixed compressible and
// random content, deterministic in seed.
func tarGz(t testing.TB, seed uint64, n int) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	files := make([]ztoctest.File, n)
	for i := range files {
		body := make([]byte, 20000+rng.IntN(40000))
		for j := range body {
			if j%3 == 0 {
				body[j] = byte(rng.Uint32())
			} else {
				body[j] = byte('a' + j%26)
			}
		}
		files[i] = ztoctest.File{Name: fmt.Sprintf("dir%d/file%d", seed, i), Mode: 0o644, Body: body}
	}
	return ztoctest.Layer(t, files, ztoctest.LayerOptions{Gzip: true})
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// forEachRegistry runs f on every registry leg, each leg its own registry.
func forEachRegistry(t *testing.T, f func(t *testing.T, reg *regtest.Registry)) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			f(t, regtest.Start(t, kind))
		})
	}
}

// referrers lists the v1 SOCI referrers of subject with a fresh client,
// as a consumer would find them.
func referrers(t testing.TB, reg *regtest.Registry, repo string, subject ocispec.Descriptor) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	err := reg.Repository(t, repo).Referrers(testContext(t), subject, index.ArtifactTypeV1, func(rs []ocispec.Descriptor) error {
		out = append(out, rs...)
		return nil
	})
	if err != nil {
		t.Fatalf("list referrers of %s: %v", subject.Digest, err)
	}
	return out
}

// tagReferrers reads the fallback tag; ok is false when it does not exist.
func tagReferrers(t testing.TB, repo *orasremote.Repository, subject digest.Digest) ([]ocispec.Descriptor, bool) {
	t.Helper()
	ctx := testContext(t)
	d, rc, err := repo.FetchReference(ctx, build.FallbackTag(subject))
	if err != nil {
		if errorsIsNotFound(err) {
			return nil, false
		}
		t.Fatalf("fetch fallback tag: %v", err)
	}
	defer rc.Close()
	buf, err := content.ReadAll(rc, d)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(buf, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Manifests, true
}

func errorsIsNotFound(err error) bool {
	return errors.Is(err, errdef.ErrNotFound)
}

// fetchSociIndex fetches and decodes an index manifest by descriptor.
func fetchSociIndex(t testing.TB, repo *orasremote.Repository, d ocispec.Descriptor) ocispec.Manifest {
	t.Helper()
	rc, err := repo.Fetch(testContext(t), ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d.Digest, Size: d.Size})
	if err != nil {
		t.Fatalf("fetch SOCI index %s: %v", d.Digest, err)
	}
	defer rc.Close()
	buf, err := content.ReadAll(rc, d)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(buf, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// fetchZtoc fetches and decodes a zTOC blob.
func fetchZtoc(t testing.TB, repo *orasremote.Repository, d ocispec.Descriptor) *ztoc.Ztoc {
	t.Helper()
	rc, err := repo.Blobs().Fetch(testContext(t), d)
	if err != nil {
		t.Fatalf("fetch zTOC %s: %v", d.Digest, err)
	}
	defer rc.Close()
	buf, err := content.ReadAll(rc, d)
	if err != nil {
		t.Fatal(err)
	}
	z, err := ztoc.Unmarshal(buf)
	if err != nil {
		t.Fatalf("decode zTOC %s: %v", d.Digest, err)
	}
	return z
}

func has(ds []ocispec.Descriptor, d digest.Digest) bool {
	for _, x := range ds {
		if x.Digest == d {
			return true
		}
	}
	return false
}
