package main

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/internal/label"
)

// manifestChildren is what containerd's children handler returns for an
// image manifest: the config, then the layers.
func manifestChildren(sizes ...int64) []ocispec.Descriptor {
	out := []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 300}}
	for i, s := range sizes {
		out = append(out, ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest:    digest.FromString(strings.Repeat("l", i+1)),
			Size:      s,
		})
	}
	return out
}

// TestPullLabels checks the layer annotations (the snapshotter's Prepare
// labels) ociseek pull adds: containerd's cri.* set plus the soci.* ones,
// the same keys and forms nerdctl's SOCI handler sends.
func TestPullLabels(t *testing.T) {
	const ref = "127.0.0.1:5000/app:v1"
	children := manifestChildren(1083991, 8366206)
	inner := images.HandlerFunc(func(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		return children, nil
	})
	manifest := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest")}
	idx := digest.FromString("index")
	got, err := labelHandlerWrapper(ref, idx.String())(inner).Handle(context.Background(), manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0].Annotations) != 0 {
		t.Errorf("config got annotations %v", got[0].Annotations)
	}
	want := []map[string]string{{
		snapshotters.TargetRefLabel:            ref,
		snapshotters.TargetManifestDigestLabel: manifest.Digest.String(),
		snapshotters.TargetLayerDigestLabel:    children[1].Digest.String(),
		snapshotters.TargetImageLayersLabel:    children[1].Digest.String() + "," + children[2].Digest.String(),
		label.LayerSize:                        "1083991",
		label.ImageLayersSize:                  "1083991,8366206",
		label.IndexDigest:                      idx.String(),
	}, {
		snapshotters.TargetRefLabel:            ref,
		snapshotters.TargetManifestDigestLabel: manifest.Digest.String(),
		snapshotters.TargetLayerDigestLabel:    children[2].Digest.String(),
		snapshotters.TargetImageLayersLabel:    children[2].Digest.String(),
		label.LayerSize:                        "8366206",
		label.ImageLayersSize:                  "8366206",
		label.IndexDigest:                      idx.String(),
	}}
	for i, w := range want {
		a := got[i+1].Annotations
		for k, v := range w {
			if a[k] != v {
				t.Errorf("layer %d: %s = %q, want %q", i+1, k, a[k], v)
			}
		}
	}

	// Other descriptors (an index's manifests) pass through untouched.
	other, err := labelHandlerWrapper(ref, "")(inner).Handle(context.Background(),
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex})
	if err != nil || len(other) != len(children) {
		t.Fatalf("index: %v, %v", other, err)
	}
}

// TestPullLabelsManyLayers: with more layers than the label size limit
// lets containerd list, the sizes list is cut to the same count, as
// readers of both labels require.
func TestPullLabelsManyLayers(t *testing.T) {
	sizes := make([]int64, 200)
	for i := range sizes {
		sizes[i] = int64(1000 + i)
	}
	children := manifestChildren(sizes...)
	inner := images.HandlerFunc(func(context.Context, ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		return children, nil
	})
	got, err := labelHandlerWrapper("r.example/a:b", "")(inner).Handle(context.Background(),
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m")})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range got[1:] {
		digests := strings.Split(c.Annotations[snapshotters.TargetImageLayersLabel], ",")
		sizes := strings.Split(c.Annotations[label.ImageLayersSize], ",")
		if len(digests) != len(sizes) {
			t.Fatalf("layer %d: %d digests but %d sizes", i+1, len(digests), len(sizes))
		}
	}
	if n := len(strings.Split(got[1].Annotations[snapshotters.TargetImageLayersLabel], ",")); n >= len(sizes) {
		t.Errorf("the first layer lists all %d layers: the test needs more to reach the label limit", n)
	}
}
