package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"

	"github.com/ociseek/ociseek/index"
)

// ConvertResult describes a SOCI-enabled image written by Convert.
type ConvertResult struct {
	// Index is the new OCI image index, tagged at the destination.
	Index ocispec.Descriptor
	// Converted holds one Result per platform that got a SOCI index;
	// Result.Annotated is its re-written image manifest.
	Converted []Result
	// Unconverted lists the image manifests copied unchanged (not selected,
	// or without any indexable layer).
	Unconverted []ocispec.Descriptor
}

// Convert writes a SOCI-enabled (v2) image to dst under dstRef, made from
// the image srcRef names in src (§2.3, §2.4): for each selected platform a
// v2 SOCI index is built, the image manifest is re-written as an OCI
// manifest annotated with the index digest, and the index is appended to a
// new OCI image index that keeps every original entry in place. All
// content the new index references is copied to dst; layers that get a
// zTOC are read from src once, feeding the builder and the copy together.
// The tag is written last. src and dst may be registry repositories or
// Layouts, in any combination.
func Convert(ctx context.Context, src oras.ReadOnlyTarget, srcRef string, dst oras.Target, dstRef string, opts Options) (*ConvertResult, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	where := describe(src)
	root, err := src.Resolve(ctx, srcRef)
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: %w", srcRef, where, err)
	}
	entries, orig, err := imageEntries(ctx, src, root, where)
	if err != nil {
		return nil, err
	}
	sel, err := selectManifests(entries, opts)
	if err != nil {
		return nil, fmt.Errorf("image %s at %s: %w", srcRef, where, err)
	}
	out := newIndexFrom(orig, entries)
	c := &converter{src: src, dst: dst, lb: &layerBuilder{src: src, dst: dst, opts: opts, copyLayers: true, where: where}}
	res := &ConvertResult{}
	converted := map[int]bool{}
	for _, i := range sel {
		r, annotated, sociEntry, err := c.convertOne(ctx, entries[i])
		if errors.Is(err, ErrNoZtocs) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out.Manifests[i] = annotated
		out.Manifests = placeSociEntry(out.Manifests, sociEntry)
		res.Converted = append(res.Converted, *r)
		converted[i] = true
	}
	if len(res.Converted) == 0 {
		return nil, fmt.Errorf("image %s at %s: %w", srcRef, where, ErrNoZtocs)
	}
	for i, e := range entries {
		if converted[i] {
			continue
		}
		if err := oras.CopyGraph(ctx, src, dst, e, oras.DefaultCopyGraphOptions); err != nil {
			return nil, fmt.Errorf("copy manifest %s to %s: %w", e.Digest, describe(dst), err)
		}
		if isImageManifest(e.MediaType) && e.ArtifactType == "" {
			res.Unconverted = append(res.Unconverted, e)
		}
	}
	if res.Index, err = c.pushJSON(ctx, ocispec.MediaTypeImageIndex, out); err != nil {
		return nil, err
	}
	if err := dst.Tag(ctx, res.Index, dstRef); err != nil {
		return nil, fmt.Errorf("tag %s at %s: %w", dstRef, describe(dst), err)
	}
	return res, nil
}

// newIndexFrom starts the output index from the original one (media type
// forced to OCI: Docker manifest lists are converted), or wraps a
// single-manifest image.
func newIndexFrom(orig *ocispec.Index, entries []ocispec.Descriptor) *ocispec.Index {
	out := &ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}}
	if orig != nil {
		*out = *orig
	}
	out.MediaType = ocispec.MediaTypeImageIndex
	out.Manifests = append([]ocispec.Descriptor(nil), entries...)
	return out
}

// placeSociEntry appends the SOCI index entry, or replaces in place an
// existing v2 SOCI entry for exactly the same platform (a re-conversion).
func placeSociEntry(ms []ocispec.Descriptor, e ocispec.Descriptor) []ocispec.Descriptor {
	for i, m := range ms {
		if m.ArtifactType == index.ArtifactTypeV2 && m.Platform != nil && e.Platform != nil &&
			platforms.OnlyStrict(*e.Platform).Match(*m.Platform) {
			ms[i] = e
			return ms
		}
	}
	return append(ms, e)
}

// converter holds what convertOne needs.
type converter struct {
	src oras.ReadOnlyTarget
	dst oras.Target
	lb  *layerBuilder
}

// convertOne builds the v2 index of one image manifest and writes it, the
// image's blobs and the annotated manifest to dst. It returns the
// annotated manifest's entry and the SOCI index entry for the OCI index.
func (c *converter) convertOne(ctx context.Context, entry ocispec.Descriptor) (*Result, ocispec.Descriptor, ocispec.Descriptor, error) {
	var none ocispec.Descriptor
	m, err := fetchManifest(ctx, c.src, entry, c.lb.where)
	if err != nil {
		return nil, none, none, err
	}
	ztocs, skipped, err := c.lb.buildAll(ctx, entry, m)
	if err != nil {
		return nil, none, none, err
	}
	if len(ztocs) == 0 {
		return nil, none, none, fmt.Errorf("manifest %s (%s): %w", entry.Digest, platformString(entry.Platform), ErrNoZtocs)
	}
	for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := oras.CopyGraph(ctx, c.src, c.dst, b, oras.DefaultCopyGraphOptions); err != nil {
			return nil, none, none, fmt.Errorf("copy blob %s to %s: %w", b.Digest, describe(c.dst), err)
		}
	}
	sociDesc, body, err := sociIndex(ztocs, nil, c.lb.opts.buildTool())
	if err != nil {
		return nil, none, none, err
	}
	if err := pushIfAbsent(ctx, c.dst, emptyConfigDesc(index.ArtifactTypeV2), index.EmptyConfig()); err != nil {
		return nil, none, none, fmt.Errorf("push SOCI index config to %s: %w", describe(c.dst), err)
	}
	if err := pushIfAbsent(ctx, c.dst, withoutArtifactType(sociDesc), body); err != nil {
		return nil, none, none, fmt.Errorf("push SOCI index %s to %s: %w", sociDesc.Digest, describe(c.dst), err)
	}
	annotated, err := c.annotate(ctx, m, sociDesc)
	if err != nil {
		return nil, none, none, err
	}
	annotatedEntry := entry
	annotatedEntry.MediaType, annotatedEntry.Digest, annotatedEntry.Size = annotated.MediaType, annotated.Digest, annotated.Size
	annotatedEntry.Annotations = maps.Clone(annotated.Annotations)
	sociEntry := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, Digest: sociDesc.Digest, Size: sociDesc.Size,
		Annotations:  map[string]string{index.AnnotationImageManifestDigest: annotated.Digest.String()},
		Platform:     entry.Platform,
		ArtifactType: index.ArtifactTypeV2,
	}
	r := &Result{Manifest: entry, Annotated: annotatedEntry, Index: sociDesc, Ztocs: ztocs, Skipped: skipped}
	return r, annotatedEntry, sociEntry, nil
}

// annotate re-writes the image manifest as an OCI manifest (Docker media
// types of manifest and config become OCI; config bytes and layers are
// unchanged) carrying com.amazon.soci.index-digest, and pushes it. The
// returned descriptor carries the manifest's annotations.
func (c *converter) annotate(ctx context.Context, m *ocispec.Manifest, sociDesc ocispec.Descriptor) (ocispec.Descriptor, error) {
	m2 := *m
	m2.MediaType = ocispec.MediaTypeImageManifest
	m2.Config.MediaType = ocispec.MediaTypeImageConfig
	m2.Annotations = maps.Clone(m.Annotations)
	if m2.Annotations == nil {
		m2.Annotations = map[string]string{}
	}
	m2.Annotations[index.AnnotationIndexDigest] = sociDesc.Digest.String()
	d, err := c.pushJSON(ctx, ocispec.MediaTypeImageManifest, &m2)
	if err != nil {
		return d, err
	}
	d.Annotations = m2.Annotations
	return d, nil
}

// pushJSON encodes v with encoding/json and pushes it to dst.
func (c *converter) pushJSON(ctx context.Context, mediaType string, v any) (ocispec.Descriptor, error) {
	buf, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode %s: %w", mediaType, err)
	}
	d := content.NewDescriptorFromBytes(mediaType, buf)
	if err := pushIfAbsent(ctx, c.dst, d, buf); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push %s %s to %s: %w", mediaType, d.Digest, describe(c.dst), err)
	}
	return d, nil
}

func withoutArtifactType(d ocispec.Descriptor) ocispec.Descriptor {
	d.ArtifactType = ""
	return d
}
