package build

import (
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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

// sociIndex encodes a SOCI index manifest with the shared model's canonical
// encoding (index.Index.Marshal, §1.2). A nil subject makes a v2 index. The
// returned descriptor carries the artifact type, as referrers lists and OCI
// index entries want it.
func sociIndex(ztocs []ocispec.Descriptor, subject *ocispec.Descriptor, buildTool string) (ocispec.Descriptor, []byte, error) {
	annotations := map[string]string{index.AnnotationBuildToolIdentifier: buildTool}
	idx := index.NewV2(ztocs, annotations)
	if subject != nil {
		idx = index.NewV1(*subject, ztocs, annotations)
	}
	return idx.Descriptor()
}

// subjectOf is the subject of a v1 index: only mediaType, digest and size
// of the platform-specific image manifest (§1.4).
func subjectOf(manifest ocispec.Descriptor) *ocispec.Descriptor {
	return &ocispec.Descriptor{MediaType: manifest.MediaType, Digest: manifest.Digest, Size: manifest.Size}
}
