package discover

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

const (
	// fixtureManifest is the SOCI-enabled (annotated) image manifest.
	fixtureManifest = digest.Digest("sha256:e2457d6a6b08ec2b6fb53feb665a004d6f99b9ac53bb79781845f71d3fb96276")
	// fixtureIndex is the v2 index the AWS tool wrote.
	fixtureIndex = digest.Digest("sha256:b732223e4f83885f5e39ae2a5b795bf353a9abd457c7e33df724734b4256365f")
)

func fixtureBlob(t testing.TB, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ztoctest.LayoutDir(t), "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatalf("read fixture blob: %v", err)
	}
	return b
}

// TestFixtureLayout: the v2 layout made by the AWS tool, pushed to each
// registry, is found through its annotation and every zTOC decodes.
func TestFixtureLayout(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			r.PushLayout(t, ztoctest.LayoutDir(t), "fixture", "soci")
			d, _ := newDiscoverer(Options{})
			ref := r.Ref("fixture", "soci")
			res, err := d.Find(ctxT(t), ref, fixtureManifest, "")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if res.Method != MethodV2Annotation || res.Descriptor.Digest != fixtureIndex {
				t.Fatalf("Find = %s via %s, want %s via v2-annotation", res.Descriptor.Digest, res.Method, fixtureIndex)
			}
			zs := res.Index.Ztocs()
			if len(zs) != 3 {
				t.Fatalf("%d zTOCs, want 3", len(zs))
			}
			for _, zd := range zs {
				z, raw, err := d.FetchZtoc(ctxT(t), ref, zd)
				if err != nil {
					t.Fatalf("FetchZtoc %s: %v", zd.Digest, err)
				}
				if !bytes.Equal(raw, fixtureBlob(t, zd.Digest)) || len(z.TOC) == 0 {
					t.Fatalf("zTOC %s: bytes differ from the fixture or empty TOC", zd.Digest)
				}
			}
		})
	}
}

// TestBuiltIndexMatchesFixture: zTOCs built by ociseek from the fixture's
// layers, put in a v2 index, give the AWS tool's index byte for byte.
func TestBuiltIndexMatchesFixture(t *testing.T) {
	var m ocispec.Manifest
	if err := json.Unmarshal(fixtureBlob(t, fixtureManifest), &m); err != nil {
		t.Fatal(err)
	}
	var ztocs []ocispec.Descriptor
	for _, l := range m.Layers {
		z, err := ztoc.Build(context.Background(), bytes.NewReader(fixtureBlob(t, l.Digest)), ztoc.BuildOptions{SpanSize: 65536})
		if err != nil {
			t.Fatalf("build zTOC of %s: %v", l.Digest, err)
		}
		b, err := ztoc.Marshal(z)
		if err != nil {
			t.Fatal(err)
		}
		ztocs = append(ztocs, ocispec.Descriptor{
			MediaType: index.MediaTypeZtoc, Digest: digest.FromBytes(b), Size: int64(len(b)),
			Annotations: map[string]string{
				index.AnnotationLayerDigest:    l.Digest.String(),
				index.AnnotationLayerMediaType: l.MediaType,
				index.AnnotationSpanSize:       "65536",
			},
		})
	}
	desc, b, err := index.NewV2(ztocs, map[string]string{index.AnnotationBuildToolIdentifier: ztoc.DefaultBuildToolIdentifier}).Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != fixtureIndex {
		t.Fatalf("built index %s differs from the AWS one %s:\n%s", desc.Digest, fixtureIndex, b)
	}
}
