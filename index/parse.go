package index

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Parse decodes and validates an index read from a registry or a store. It
// checks, in order: the size bound (MaxSize), that the bytes are one JSON
// object, schemaVersion 2, mediaType of an OCI image manifest, a config
// media type of a SOCI artifact type, well-formed digests and non-negative
// sizes everywhere, and on every zTOC descriptor a well-formed
// image-layer-digest annotation that no other zTOC descriptor repeats.
// Descriptors of other media types (prefetch, or kinds not known yet) are
// kept and only their digests are checked. Every error wraps ErrInvalid.
func Parse(b []byte) (*Index, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrInvalid, len(b), MaxSize)
	}
	var m ocispec.Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: decode JSON: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	idx := &Index{Manifest: m}
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	return idx, nil
}

// Validate checks the index as Parse does (all but the size bound). Every
// error wraps ErrInvalid.
func (i *Index) Validate() error {
	m := &i.Manifest
	if m.SchemaVersion != 2 {
		return fmt.Errorf("%w: schemaVersion %d, want 2", ErrInvalid, m.SchemaVersion)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest {
		return fmt.Errorf("%w: mediaType %q, want %q", ErrInvalid, m.MediaType, ocispec.MediaTypeImageManifest)
	}
	if ct := m.Config.MediaType; ct != ArtifactTypeV1 && ct != ArtifactTypeV2 {
		return fmt.Errorf("%w: config mediaType %q is not a SOCI index type", ErrInvalid, ct)
	}
	if err := checkDescriptor("config", m.Config); err != nil {
		return err
	}
	if m.Subject != nil {
		if err := checkDescriptor("subject", *m.Subject); err != nil {
			return err
		}
	}
	seen := make(map[string]int, len(m.Layers))
	for n, l := range m.Layers {
		what := fmt.Sprintf("layers[%d]", n)
		if err := checkDescriptor(what, l); err != nil {
			return err
		}
		if err := checkLayerAnnotation(what, l); err != nil {
			return err
		}
		if l.MediaType != MediaTypeZtoc {
			continue
		}
		layer := l.Annotations[AnnotationLayerDigest]
		if prev, dup := seen[layer]; dup {
			return fmt.Errorf("%w: %s and layers[%d] both index layer %s", ErrInvalid, what, prev, layer)
		}
		seen[layer] = n
	}
	return nil
}

// checkLayerAnnotation requires the layer-digest annotation on zTOC
// descriptors (it is the only link from a layer to its zTOC) and checks it
// on any descriptor that carries it.
func checkLayerAnnotation(what string, d ocispec.Descriptor) error {
	v, ok := d.Annotations[AnnotationLayerDigest]
	if !ok {
		if d.MediaType == MediaTypeZtoc {
			return fmt.Errorf("%w: %s: zTOC descriptor without %s", ErrInvalid, what, AnnotationLayerDigest)
		}
		return nil
	}
	if err := digest.Digest(v).Validate(); err != nil {
		return fmt.Errorf("%w: %s: %s %q: %w", ErrInvalid, what, AnnotationLayerDigest, v, err)
	}
	return nil
}

func checkDescriptor(what string, d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: %s digest %q: %w", ErrInvalid, what, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: %s size %d is negative", ErrInvalid, what, d.Size)
	}
	return nil
}
