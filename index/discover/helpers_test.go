package discover

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// layer makes a small gzip tar layer with one file per name.
func layer(t testing.TB, names ...string) []byte {
	t.Helper()
	files := make([]ztoctest.File, len(names))
	for i, n := range names {
		files[i] = ztoctest.File{Name: n, Mode: 0o644, Body: []byte("content of " + n)}
	}
	return ztoctest.Layer(t, files, ztoctest.LayerOptions{Gzip: true})
}

// image is a pushed test image with its layers.
type image struct {
	manifest ocispec.Descriptor
	layers   [][]byte
}

func pushImage(t testing.TB, r *regtest.Registry, repo, tag string, annotations map[string]string, files ...string) image {
	t.Helper()
	var layers [][]byte
	for _, f := range files {
		layers = append(layers, layer(t, f))
	}
	m := r.PushImageWith(t, repo, regtest.Image{Tag: tag, Layers: layers, Annotations: annotations})
	return image{manifest: m, layers: layers}
}

// ztocsFor builds and pushes a zTOC per layer to repo and returns their
// descriptors as an index lists them.
func ztocsFor(t testing.TB, r *regtest.Registry, repo string, layers [][]byte) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	for _, l := range layers {
		z, err := ztoc.Build(context.Background(), bytes.NewReader(l), ztoc.BuildOptions{SpanSize: 1 << 16})
		if err != nil {
			t.Fatalf("build zTOC: %v", err)
		}
		b, err := ztoc.Marshal(z)
		if err != nil {
			t.Fatalf("marshal zTOC: %v", err)
		}
		d := r.PushBlob(t, repo, b, index.MediaTypeZtoc)
		d.Annotations = map[string]string{
			index.AnnotationLayerDigest:    digest.FromBytes(l).String(),
			index.AnnotationLayerMediaType: ocispec.MediaTypeImageLayerGzip,
			index.AnnotationSpanSize:       "65536",
		}
		out = append(out, d)
	}
	return out
}

// pushIndex pushes idx (config and manifest; zTOC blobs must be there) to
// repo and returns its descriptor. oras maintains the fallback tag where
// the registry has no referrers API.
func pushIndex(t testing.TB, r *regtest.Registry, repo string, idx *index.Index) ocispec.Descriptor {
	t.Helper()
	r.PushBlob(t, repo, index.EmptyConfig(), idx.Version().ArtifactType())
	desc, b, err := idx.Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	got := r.PushManifest(t, repo, "", b, ocispec.MediaTypeImageManifest)
	if got.Digest != desc.Digest {
		t.Fatalf("pushed index digest %s, want %s", got.Digest, desc.Digest)
	}
	return desc
}

// pushV1 pushes zTOCs and a v1 index for img to repo.
func pushV1(t testing.TB, r *regtest.Registry, repo string, img image, annotations map[string]string) ocispec.Descriptor {
	t.Helper()
	return pushIndex(t, r, repo, index.NewV1(img.manifest, ztocsFor(t, r, repo, img.layers), annotations))
}

// clock is a settable clock for TTL tests.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// newDiscoverer returns a Discoverer with a test clock.
func newDiscoverer(opts Options) (*Discoverer, *clock) {
	c := &clock{now: time.Unix(1800000000, 0)}
	opts.Now = c.Now
	return New(opts), c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// wantMethod is how a v1 index is found on each kind of registry.
func wantMethod(k regtest.Kind) Method {
	if k.HasReferrersAPI() {
		return MethodReferrersAPI
	}
	return MethodFallbackTag
}
