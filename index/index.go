package index

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxSize bounds the encoded size of an index read from anywhere. It is the
// manifest limit registries and oras enforce (4 MiB); an index of that size
// already describes tens of thousands of layers.
const MaxSize = 4 << 20

// ErrInvalid reports an index that is malformed or inconsistent. Every
// validation error from Parse wraps it.
var ErrInvalid = errors.New("invalid SOCI index")

// Version distinguishes the two ways an index is bound to its image.
type Version int

const (
	// V1 indices name their image manifest in subject and are found with
	// the referrers API or the sha256-<hex> fallback tag.
	V1 Version = 1
	// V2 indices have no subject; the image manifest names them with the
	// com.amazon.soci.index-digest annotation.
	V2 Version = 2
)

// ArtifactType returns the config media type (and artifact type) of v.
func (v Version) ArtifactType() string {
	if v == V1 {
		return ArtifactTypeV1
	}
	return ArtifactTypeV2
}

// String returns "v1" or "v2".
func (v Version) String() string { return fmt.Sprintf("v%d", int(v)) }

// Index is a SOCI index: an OCI image manifest whose config media type is a
// SOCI artifact type and whose layers are zTOC (and prefetch) descriptors.
// The wire struct is kept as is, so re-encoding reproduces the bytes Go's
// encoding/json writes for image-spec's Manifest.
type Index struct {
	// Manifest is the decoded wire form.
	Manifest ocispec.Manifest
}

// NewV1 returns a v1 index for the image manifest described by subject. Only
// the subject's media type, digest and size are kept, as the reference does.
// ztocs are the zTOC (and prefetch) descriptors in image layer order.
func NewV1(subject ocispec.Descriptor, ztocs []ocispec.Descriptor, annotations map[string]string) *Index {
	idx := newIndex(V1, ztocs, annotations)
	idx.Manifest.Subject = &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	return idx
}

// NewV2 returns a v2 index (no subject) of the given zTOC (and prefetch)
// descriptors, in image layer order.
func NewV2(ztocs []ocispec.Descriptor, annotations map[string]string) *Index {
	return newIndex(V2, ztocs, annotations)
}

func newIndex(v Version, ztocs []ocispec.Descriptor, annotations map[string]string) *Index {
	return &Index{Manifest: ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{
			MediaType: v.ArtifactType(),
			Digest:    digest.Digest(EmptyConfigDigest),
			Size:      int64(len(emptyConfig)),
		},
		Layers:      ztocs,
		Annotations: annotations,
	}}
}

// Version returns V1 or V2 from the config media type.
func (i *Index) Version() Version {
	if i.Manifest.Config.MediaType == ArtifactTypeV1 {
		return V1
	}
	return V2
}

// Marshal returns the canonical encoding: compact Go JSON of image-spec's
// Manifest with mediaType set to the OCI image manifest type and no
// top-level artifactType. The reference snapshotter re-encodes fetched
// indices this way and stores them under the fetched digest, so any other
// encoding would make it abandon lazy loading.
func (i *Index) Marshal() ([]byte, error) {
	m := i.Manifest
	m.MediaType = ocispec.MediaTypeImageManifest
	m.ArtifactType = ""
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode SOCI index: %w", err)
	}
	return b, nil
}

// Descriptor encodes the index and returns its descriptor (with the
// artifact type set, as referrers lists and OCI indices carry it) and bytes.
func (i *Index) Descriptor() (ocispec.Descriptor, []byte, error) {
	b, err := i.Marshal()
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: i.Version().ArtifactType(),
		Digest:       digest.FromBytes(b),
		Size:         int64(len(b)),
	}, b, nil
}

// Ztocs returns the zTOC descriptors, in index order.
func (i *Index) Ztocs() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, l := range i.Manifest.Layers {
		if l.MediaType == MediaTypeZtoc {
			out = append(out, l)
		}
	}
	return out
}

// ZtocFor returns the descriptor of the zTOC that indexes the given layer.
// It returns an error wrapping ErrNoZtoc when the index does not cover it.
func (i *Index) ZtocFor(layer digest.Digest) (ocispec.Descriptor, error) {
	for _, l := range i.Manifest.Layers {
		if l.MediaType == MediaTypeZtoc && l.Annotations[AnnotationLayerDigest] == layer.String() {
			return l, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("layer %s: %w", layer, ErrNoZtoc)
}

// PrefetchFor returns the prefetch descriptor of the given layer, and
// whether there is one.
func (i *Index) PrefetchFor(layer digest.Digest) (ocispec.Descriptor, bool) {
	for _, l := range i.Manifest.Layers {
		if l.MediaType == MediaTypePrefetch && l.Annotations[AnnotationLayerDigest] == layer.String() {
			return l, true
		}
	}
	return ocispec.Descriptor{}, false
}
