package regtest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
)

// Image describes a test image to push.
type Image struct {
	// Tag is the tag to push the manifest under; empty means "latest".
	Tag string
	// Layers are the layer blobs, bottom first.
	Layers [][]byte
	// MediaTypes holds each layer's media type; missing entries default to
	// ocispec.MediaTypeImageLayerGzip.
	MediaTypes []string
	// Annotations are the manifest's top-level annotations (e.g. the SOCI
	// v2 binding com.amazon.soci.index-digest).
	Annotations map[string]string
}

// PushImage pushes a linux/amd64 image of the given layers to repo under the
// tag "latest" and returns its manifest descriptor.
func (r *Registry) PushImage(t testing.TB, repo string, layers [][]byte, mediaTypes []string) ocispec.Descriptor {
	t.Helper()
	return r.PushImageWith(t, repo, Image{Layers: layers, MediaTypes: mediaTypes})
}

// PushImageWith pushes img (config, layers, manifest) to repo and returns
// the manifest descriptor.
func (r *Registry) PushImageWith(t testing.TB, repo string, img Image) ocispec.Descriptor {
	t.Helper()
	manifest := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Annotations: img.Annotations,
	}
	config := ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	for i, blob := range img.Layers {
		mt := ocispec.MediaTypeImageLayerGzip
		if i < len(img.MediaTypes) && img.MediaTypes[i] != "" {
			mt = img.MediaTypes[i]
		}
		manifest.Layers = append(manifest.Layers, r.PushBlob(t, repo, blob, mt))
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, diffID(t, blob, mt))
	}
	configJSON := mustJSON(t, config)
	manifest.Config = r.PushBlob(t, repo, configJSON, ocispec.MediaTypeImageConfig)
	tag := img.Tag
	if tag == "" {
		tag = "latest"
	}
	return r.PushManifest(t, repo, tag, mustJSON(t, manifest), ocispec.MediaTypeImageManifest)
}

// diffID returns the digest of the uncompressed layer.
func diffID(t testing.TB, blob []byte, mediaType string) digest.Digest {
	t.Helper()
	if !strings.HasSuffix(mediaType, "gzip") {
		return digest.FromBytes(blob)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("test layer is not gzip: %v", err)
	}
	d := digest.Canonical.Digester()
	if _, err := io.Copy(d.Hash(), zr); err != nil {
		t.Fatalf("test layer is not gzip: %v", err)
	}
	return d.Digest()
}

// PushBlob pushes data as a blob to repo (if not there yet) and returns its
// descriptor.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte, mediaType string) ocispec.Descriptor {
	t.Helper()
	desc := content.NewDescriptorFromBytes(mediaType, data)
	ctx := testContext(t)
	rp := r.Repository(t, repo)
	ok, err := rp.Blobs().Exists(ctx, desc)
	if err != nil {
		t.Fatalf("check blob %s in %s/%s: %v", desc.Digest, r.Host, repo, err)
	}
	if !ok {
		if err := rp.Blobs().Push(ctx, desc, bytes.NewReader(data)); err != nil {
			t.Fatalf("push blob %s to %s/%s: %v", desc.Digest, r.Host, repo, err)
		}
	}
	return desc
}

// PushManifest pushes a manifest (by digest, or under tag when tag is not
// empty) and returns its descriptor. A manifest with a subject is indexed by
// oras: on registries without the referrers API it lands in the subject's
// sha256-<hex> fallback tag.
func (r *Registry) PushManifest(t testing.TB, repo, tag string, manifest []byte, mediaType string) ocispec.Descriptor {
	t.Helper()
	desc := content.NewDescriptorFromBytes(mediaType, manifest)
	ctx := testContext(t)
	rp := r.Repository(t, repo)
	var err error
	if tag == "" {
		err = rp.Push(ctx, desc, bytes.NewReader(manifest))
	} else {
		err = rp.PushReference(ctx, desc, bytes.NewReader(manifest), tag)
	}
	if err != nil {
		t.Fatalf("push manifest %s to %s/%s: %v", desc.Digest, r.Host, repo, err)
	}
	return desc
}

// PushLayout copies the graph rooted at the only manifest listed in the OCI
// image layout at dir to repo, tags it, and returns the root descriptor.
func (r *Registry) PushLayout(t testing.TB, dir, repo, tag string) ocispec.Descriptor {
	t.Helper()
	ctx := testContext(t)
	store, err := oci.NewFromFS(ctx, os.DirFS(dir))
	if err != nil {
		t.Fatalf("open OCI layout %s: %v", dir, err)
	}
	raw, err := os.ReadFile(dir + "/index.json")
	if err != nil {
		t.Fatalf("read OCI layout index: %v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("OCI layout %s: want exactly one root manifest (err %v)", dir, err)
	}
	root := idx.Manifests[0]
	rp := r.Repository(t, repo)
	if err := oras.CopyGraph(ctx, store, rp, root, oras.DefaultCopyGraphOptions); err != nil {
		t.Fatalf("copy layout %s to %s/%s: %v", dir, r.Host, repo, err)
	}
	if err := rp.Tag(ctx, root, tag); err != nil {
		t.Fatalf("tag %s in %s/%s: %v", root.Digest, r.Host, repo, err)
	}
	return root
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return b
}
