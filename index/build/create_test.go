package build_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestCreate builds a v1 index for an image with indexable, small and zstd
// layers and checks what a consumer finds: the index among the referrers
// (by API or fallback tag), its subject, one zTOC per indexable layer with
// the linking annotations, and zTOCs that decode and match their layers.
func TestCreate(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		big1, big2, small := tarGz(t, 1, 12), tarGz(t, 2, 8), tarGz(t, 3, 1)
		zstdish := []byte("\x28\xb5\x2f\xfdnot really zstd, never read")
		img := reg.PushImage(t, "app", [][]byte{big1, small, zstdish, big2},
			[]string{"", "", "application/vnd.oci.image.layer.v1.tar+zstd", ""})
		repo := reg.Repository(t, "app")
		var mu sync.Mutex
		read := map[string]int64{}
		opts := build.CreateOptions{
			Options: build.Options{SpanSize: testSpan, MinLayerSize: int64(len(small)) + 1,
				Progress: func(p build.LayerProgress) {
					mu.Lock()
					defer mu.Unlock()
					read[p.Layer.Digest.String()] = max(read[p.Layer.Digest.String()], p.Read)
				}},
			Publish: fastPublish,
		}
		res, err := build.Create(ctx, repo, "latest", nil, opts)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if len(res) != 1 || res[0].Manifest.Digest != img.Digest {
			t.Fatalf("results %+v, want one for manifest %s", res, img.Digest)
		}
		r := res[0]
		if len(r.Ztocs) != 2 || len(r.Skipped) != 2 {
			t.Fatalf("%d zTOCs, %d skipped (%+v); want 2 and 2", len(r.Ztocs), len(r.Skipped), r.Skipped)
		}
		found := referrers(t, reg, "app", img)
		if !has(found, r.Index.Digest) {
			t.Fatalf("index %s not among referrers %v", r.Index.Digest, found)
		}
		_, tagged := tagReferrers(t, reg.Repository(t, "app"), img.Digest)
		if reg.Kind.HasReferrersAPI() == tagged {
			t.Errorf("fallback tag exists = %v on %s", tagged, reg.Kind)
		}
		m := fetchSociIndex(t, reg.Repository(t, "app"), r.Index)
		if m.Subject == nil || m.Subject.Digest != img.Digest || m.Config.MediaType != index.ArtifactTypeV1 {
			t.Fatalf("index subject %+v config %s", m.Subject, m.Config.MediaType)
		}
		man := fetchImageManifest(t, reg.Repository(t, "app"), img)
		for i, want := range []ocispec.Descriptor{man.Layers[0], man.Layers[3]} {
			zd := m.Layers[i]
			if zd.Annotations[index.AnnotationLayerDigest] != want.Digest.String() ||
				zd.Annotations[index.AnnotationSpanSize] != strconv.Itoa(testSpan) ||
				zd.MediaType != index.MediaTypeZtoc {
				t.Errorf("zTOC descriptor %d: %+v, want layer %s", i, zd, want.Digest)
			}
			z := fetchZtoc(t, reg.Repository(t, "app"), zd)
			if z.CompressedArchiveSize != want.Size || len(z.TOC) == 0 {
				t.Errorf("zTOC of layer %d: size %d (want %d), %d entries", i, z.CompressedArchiveSize, want.Size, len(z.TOC))
			}
			if read[want.Digest.String()] != want.Size {
				t.Errorf("progress for layer %d reached %d of %d bytes", i, read[want.Digest.String()], want.Size)
			}
		}
	})
}

func fetchImageManifest(t testing.TB, repo *orasremote.Repository, d ocispec.Descriptor) ocispec.Manifest {
	t.Helper()
	buf, err := content.FetchAll(testContext(t), repo, d)
	if err != nil {
		t.Fatalf("fetch manifest %s: %v", d.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(buf, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }

// TestCreateRace runs 8 creates of different indices (different span
// sizes) for one subject at once, each with its own client as separate
// processes would; every one must end up listed, on every leg.
func TestCreateRace(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		img := reg.PushImage(t, "race", [][]byte{tarGz(t, 4, 4)}, nil)
		const n = 8
		digests := make([]string, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				opts := build.CreateOptions{Options: build.Options{SpanSize: testSpan + int64(i)*4096, Jobs: 1}, Publish: fastPublish}
				res, err := build.Create(ctx, reg.Repository(t, "race"), img.Digest.String(), nil, opts)
				if err != nil {
					errs <- fmt.Errorf("create %d: %w", i, err)
					return
				}
				digests[i] = res[0].Index.Digest.String()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		found := referrers(t, reg, "race", img)
		for i, d := range digests {
			if !has(found, digestOf(d)) {
				t.Errorf("index %d (%s) missing from the %d referrers listed", i, d, len(found))
			}
		}
		if len(found) != n {
			t.Errorf("%d referrers listed, want %d", len(found), n)
		}
	})
}

// TestCreateIndexRepo publishes the index (and its zTOCs) to a separate
// repository: the image repository gets nothing, the index repository
// lists the index for the image's manifest digest.
func TestCreateIndexRepo(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		img := reg.PushImage(t, "img", [][]byte{tarGz(t, 30, 3)}, nil)
		res, err := build.Create(ctx, reg.Repository(t, "img"), "latest", reg.Repository(t, "indices"),
			build.CreateOptions{Options: build.Options{SpanSize: testSpan}, Publish: fastPublish})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if found := referrers(t, reg, "indices", img); !has(found, res[0].Index.Digest) {
			t.Errorf("index repository lists %v, want %s", found, res[0].Index.Digest)
		}
		if found := referrers(t, reg, "img", img); len(found) != 0 {
			t.Errorf("image repository lists %v, want nothing", found)
		}
		m := fetchSociIndex(t, reg.Repository(t, "indices"), res[0].Index)
		fetchZtoc(t, reg.Repository(t, "indices"), m.Layers[0])
	})
}
