package build_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/build"
)

// pushJSON stores v in l and returns its descriptor.
func pushJSON(t *testing.T, l *build.Layout, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	buf, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pushBytes(t, l, mediaType, buf)
}

func pushBytes(t *testing.T, l *build.Layout, mediaType string, buf []byte) ocispec.Descriptor {
	t.Helper()
	d := content.NewDescriptorFromBytes(mediaType, buf)
	if ok, _ := l.Exists(context.Background(), d); !ok {
		if err := l.Push(context.Background(), d, bytes.NewReader(buf)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// multiPlatformLayout writes a two-platform image (linux/amd64 and
// linux/arm64, one gzip layer each) tagged "multi".
func multiPlatformLayout(t *testing.T) *build.Layout {
	t.Helper()
	l, err := build.OpenLayout(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for i, arch := range []string{"amd64", "arm64"} {
		p := ocispec.Platform{OS: "linux", Architecture: arch}
		layer := pushBytes(t, l, ocispec.MediaTypeImageLayerGzip, tarGz(t, uint64(20+i), 3))
		cfg := pushJSON(t, l, ocispec.MediaTypeImageConfig, ocispec.Image{Platform: p})
		m := pushJSON(t, l, ocispec.MediaTypeImageManifest, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
		m.Platform = &p
		idx.Manifests = append(idx.Manifests, m)
	}
	root := pushJSON(t, l, ocispec.MediaTypeImageIndex, idx)
	if err := l.Tag(context.Background(), root, "multi"); err != nil {
		t.Fatal(err)
	}
	return l
}

// readIndex reads the OCI index tagged ref in l.
func readIndex(t *testing.T, l *build.Layout, ref string) ocispec.Index {
	t.Helper()
	ctx := context.Background()
	d, err := l.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := content.FetchAll(ctx, l, d)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(buf, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// summary describes the entries of an index as "arch[+soci]" strings.
func summary(idx ocispec.Index) string {
	var parts []string
	for _, m := range idx.Manifests {
		s := m.Platform.Architecture
		if m.ArtifactType == index.ArtifactTypeV2 {
			s = "soci-" + s
		} else if m.Annotations[index.AnnotationIndexDigest] != "" {
			s += "*"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// TestConvertPlatforms: the selected platform is converted and the other
// copied as is; --all-platforms converts both; converting the result again
// replaces the SOCI entries in place; an absent platform is an error.
func TestConvertPlatforms(t *testing.T) {
	ctx := context.Background()
	src := multiPlatformLayout(t)
	dst, err := build.OpenLayout(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	arm := []ocispec.Platform{{OS: "linux", Architecture: "arm64"}}
	res, err := build.Convert(ctx, src, "multi", dst, "one", build.Options{SpanSize: testSpan, Platforms: arm})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if got := summary(readIndex(t, dst, "one")); got != "amd64,arm64*,soci-arm64" {
		t.Errorf("entries %s, want amd64,arm64*,soci-arm64", got)
	}
	if len(res.Unconverted) != 1 || res.Unconverted[0].Platform.Architecture != "amd64" {
		t.Errorf("unconverted %+v, want the amd64 manifest", res.Unconverted)
	}
	if ok, _ := dst.Exists(ctx, res.Unconverted[0]); !ok {
		t.Errorf("the unconverted manifest was not copied")
	}

	if _, err = build.Convert(ctx, src, "multi", dst, "all", build.Options{SpanSize: testSpan, AllPlatforms: true}); err != nil {
		t.Fatalf("Convert --all-platforms: %v", err)
	}
	if got := summary(readIndex(t, dst, "all")); got != "amd64*,arm64*,soci-amd64,soci-arm64" {
		t.Errorf("entries %s", got)
	}

	if _, err = build.Convert(ctx, dst, "all", dst, "again", build.Options{SpanSize: 2 * testSpan, AllPlatforms: true}); err != nil {
		t.Fatalf("re-convert: %v", err)
	}
	if got := summary(readIndex(t, dst, "again")); got != "amd64*,arm64*,soci-amd64,soci-arm64" {
		t.Errorf("re-converted entries %s, want the SOCI entries replaced in place", got)
	}

	s390 := []ocispec.Platform{{OS: "linux", Architecture: "s390x"}}
	_, err = build.Convert(ctx, src, "multi", dst, "none", build.Options{Platforms: s390})
	if err == nil || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("Convert for a missing platform: %v", err)
	}
}
