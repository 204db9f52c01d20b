// Package index owns the SOCI index model: the media types, artifact types
// and annotation keys of SOCI index manifests (v1, bound to an image by
// subject, and v2, bound by an annotation on the image manifest), their
// canonical JSON encoding, and the validation of indices fetched from a
// registry. It also holds the sentinel errors that say an image has no index
// or a layer has no zTOC, so that every consumer tests the same facts.
//
// Format facts follow the AWS soci-snapshotter's index format
// (github.com/awslabs/soci-snapshotter, soci/ and docs/soci-index-manifest-v2.md).
package index

import "errors"

// Artifact and media types.
const (
	// ArtifactTypeV1 is the config media type (and artifact type) of a v1 index.
	ArtifactTypeV1 = "application/vnd.amazon.soci.index.v1+json"
	// ArtifactTypeV2 is the config media type (and artifact type) of a v2 index.
	ArtifactTypeV2 = "application/vnd.amazon.soci.index.v2+json"
	// MediaTypeZtoc is the media type of zTOC descriptors in an index.
	MediaTypeZtoc = "application/octet-stream"
	// MediaTypePrefetch is the media type of (experimental) prefetch descriptors.
	MediaTypePrefetch = "application/vnd.amazon.soci.prefetch.v1+json"
	// EmptyConfigDigest is the digest of the two-byte "{}" config blob.
	EmptyConfigDigest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
)

// emptyConfig is never modified; EmptyConfig hands out copies.
var emptyConfig = []byte("{}")

// EmptyConfig returns the content of every SOCI index's config blob.
func EmptyConfig() []byte { return append([]byte(nil), emptyConfig...) }

// Annotation keys.
const (
	// AnnotationLayerDigest on a zTOC descriptor names the image layer it indexes.
	AnnotationLayerDigest = "com.amazon.soci.image-layer-digest"
	// AnnotationLayerMediaType on a zTOC descriptor is the layer's media type.
	AnnotationLayerMediaType = "com.amazon.soci.image-layer-mediaType"
	// AnnotationSpanSize on a zTOC descriptor is the decimal span size.
	AnnotationSpanSize = "com.amazon.soci.span-size"
	// AnnotationDisableXattrs on a zTOC descriptor says the layer has no xattrs.
	AnnotationDisableXattrs = "com.amazon.soci.disable-xattrs"
	// AnnotationBuildToolIdentifier on an index names the tool that built it.
	AnnotationBuildToolIdentifier = "com.amazon.soci.build-tool-identifier"
	// AnnotationIndexDigest on a v2 SOCI-enabled image manifest binds its index.
	AnnotationIndexDigest = "com.amazon.soci.index-digest"
	// AnnotationImageManifestDigest on a v2 index descriptor in an OCI index
	// names the image manifest it belongs to.
	AnnotationImageManifestDigest = "com.amazon.soci.image-manifest-digest"
)

// Sentinel errors, tested with errors.Is by the snapshotter to choose a path.
var (
	// ErrNoIndex reports an image for which no SOCI index was found.
	ErrNoIndex = errors.New("no SOCI index found")
	// ErrNoZtoc reports a layer that the image's index does not cover.
	ErrNoZtoc = errors.New("no zTOC for layer")
	// ErrZtocTooLarge reports a layer whose zTOC is over a configured bound
	// (blob size, entry count or span count): the layer is better fetched
	// whole than served from a zTOC held in memory for its mount's life.
	ErrZtocTooLarge = errors.New("zTOC too large")
	// ErrZtocBudget reports a layer whose zTOC would take the zTOCs held
	// for mounted layers over their memory budget.
	ErrZtocBudget = errors.New("zTOC memory budget exhausted")
	// ErrIndexNotTrusted reports an image for which only SOCI v1 indices
	// could be used and the configuration does not trust v1 indices from
	// its repositories. Errors wrapping it wrap ErrNoIndex too, so callers
	// that do not tell them apart treat the image as unindexed.
	ErrIndexNotTrusted = errors.New("SOCI v1 index not trusted")
	// ErrZtocRejected reports a layer whose zTOC was found, on this node,
	// not to match the layer (a forged or wrong index): it is never
	// mounted from that zTOC again.
	ErrZtocRejected = errors.New("zTOC failed verification before")
	// ErrUnauthorized reports a registry that refused the daemon's request
	// for want of credentials it accepts (HTTP 401 or 403, or a challenge
	// the daemon had no credentials for). containerd, which pulls with
	// the credentials kubelet or the user gave it, may still pull.
	ErrUnauthorized = errors.New("unauthorized")
)
