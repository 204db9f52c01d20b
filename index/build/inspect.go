package build

import (
	"context"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/ociseek/ociseek/index"
)

// ImageManifests resolves ref in src and returns the image manifests it
// names, each with its platform: the entries of an image index (SOCI index
// entries and other artifacts left out), or the one manifest, with the
// platform read from its config.
func ImageManifests(ctx context.Context, src oras.ReadOnlyTarget, ref string) ([]ocispec.Descriptor, error) {
	where := describe(src)
	root, err := src.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: %w", ref, where, err)
	}
	entries, _, err := imageEntries(ctx, src, root, where)
	if err != nil {
		return nil, err
	}
	var out []ocispec.Descriptor
	for _, e := range entries {
		if isImageManifest(e.MediaType) && e.ArtifactType == "" {
			out = append(out, e)
		}
	}
	return out, nil
}

// FetchIndex fetches the SOCI index manifest dgst from src (resolving its
// size), bounded to index.MaxSize, verified and validated with index.Parse.
func FetchIndex(ctx context.Context, src oras.ReadOnlyTarget, dgst digest.Digest) (*index.Index, ocispec.Descriptor, error) {
	where := describe(src)
	if err := dgst.Validate(); err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("SOCI index digest %q: %w", dgst, err)
	}
	d, err := src.Resolve(ctx, dgst.String())
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("resolve SOCI index %s at %s: %w", dgst, where, err)
	}
	buf, err := fetchBounded(ctx, src, d, "SOCI index", where)
	if err != nil {
		return nil, d, err
	}
	idx, err := index.Parse(buf)
	if err != nil {
		return nil, d, fmt.Errorf("SOCI index %s at %s: %w", dgst, where, err)
	}
	d.ArtifactType = idx.Version().ArtifactType()
	return idx, d, nil
}

// SpanSize returns the span size the index's zTOC descriptors are
// annotated with, or 0 when they carry none or disagree.
func SpanSize(idx *index.Index) int64 {
	var span int64
	for _, z := range idx.Ztocs() {
		s, err := strconv.ParseInt(z.Annotations[index.AnnotationSpanSize], 10, 64)
		if err != nil || (span != 0 && s != span) {
			return 0
		}
		span = s
	}
	return span
}
