package build

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/ociseek/ociseek/index"
)

// emptyConfigDesc is the config descriptor of a SOCI index of the given
// artifact type: the "{}" blob labelled with the artifact type (§1.1).
func emptyConfigDesc(artifactType string) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: artifactType,
		Digest:    digest.Digest(index.EmptyConfigDigest),
		Size:      int64(len(index.EmptyConfig())),
	}
}

// sociIndex encodes a SOCI index manifest: Go's encoding/json of
// image-spec's Manifest, with no top-level artifactType, which is what the
// reference snapshotter re-encodes and compares digests against (§1.2).
// A nil subject makes a v2 index. The returned descriptor carries the
// artifact type, as referrers lists and OCI index entries want it.
func sociIndex(artifactType string, ztocs []ocispec.Descriptor, subject *ocispec.Descriptor, buildTool string) (ocispec.Descriptor, []byte, error) {
	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      emptyConfigDesc(artifactType),
		Layers:      ztocs,
		Subject:     subject,
		Annotations: map[string]string{index.AnnotationBuildToolIdentifier: buildTool},
	}
	buf, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("encode SOCI index: %w", err)
	}
	d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, buf)
	d.ArtifactType = artifactType
	return d, buf, nil
}

// subjectOf is the subject of a v1 index: only mediaType, digest and size
// of the platform-specific image manifest (§1.4).
func subjectOf(manifest ocispec.Descriptor) *ocispec.Descriptor {
	return &ocispec.Descriptor{MediaType: manifest.MediaType, Digest: manifest.Digest, Size: manifest.Size}
}
