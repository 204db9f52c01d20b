package build

import (
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/ztoc"
)

// DefaultMinLayerSize is the compressed layer size below which the AWS
// tooling (and the ociseek CLI) builds no zTOC: small layers are cheaper to
// pull whole than to mount lazily.
const DefaultMinLayerSize int64 = 10 << 20

// MaxManifestBytes bounds every manifest, index and config read, as oras and
// the reference snapshotter do; a larger answer is refused, never buffered.
const MaxManifestBytes int64 = 4 << 20

// Options are the knobs shared by Create and Convert. The zero value builds
// zTOCs for every layer with the default span size.
type Options struct {
	// SpanSize is the zTOC span size in uncompressed bytes; zero means
	// ztoc.DefaultSpanSize (4 MiB).
	SpanSize int64
	// MinLayerSize skips layers whose compressed size is strictly less than
	// it. Zero indexes every layer; the CLI passes DefaultMinLayerSize.
	MinLayerSize int64
	// BuildToolIdentifier is written into zTOCs and indices; empty means
	// ztoc.DefaultBuildToolIdentifier, which keeps our bytes identical to the
	// AWS tooling's.
	BuildToolIdentifier string
	// Platforms selects the image manifests to index. Empty means the host
	// platform, or the image's only platform when it has just one.
	Platforms []ocispec.Platform
	// AllPlatforms selects every manifest of the image; it overrides
	// Platforms.
	AllPlatforms bool
	// Jobs is the number of layers built at once; zero means 2. Each job holds
	// one layer stream and the builder's span state.
	Jobs int
	// Progress, when set, is called as layers are read and built. It is
	// called from several goroutines at once and must not block.
	Progress func(LayerProgress)
}

// LayerProgress reports the state of one layer of one image manifest.
type LayerProgress struct {
	// Manifest is the image manifest the layer belongs to.
	Manifest ocispec.Descriptor
	// Layer is the layer descriptor from that manifest.
	Layer ocispec.Descriptor
	// Read is the number of compressed bytes read so far.
	Read int64
	// Done is set on the last report for the layer.
	Done bool
	// Skipped, on the last report, says why no zTOC was built; empty when
	// one was.
	Skipped string
}

func (o Options) spanSize() int64 {
	if o.SpanSize == 0 {
		return ztoc.DefaultSpanSize
	}
	return o.SpanSize
}

func (o Options) buildTool() string {
	if o.BuildToolIdentifier == "" {
		return ztoc.DefaultBuildToolIdentifier
	}
	return o.BuildToolIdentifier
}

func (o Options) jobs() int {
	if o.Jobs <= 0 {
		return 2
	}
	return o.Jobs
}

func (o Options) validate() error {
	if o.SpanSize < 0 {
		return fmt.Errorf("span size %d: must be positive", o.SpanSize)
	}
	if o.MinLayerSize < 0 {
		return fmt.Errorf("min layer size %d: must not be negative", o.MinLayerSize)
	}
	return nil
}

func (o Options) report(p LayerProgress) {
	if o.Progress != nil {
		o.Progress(p)
	}
}

// Skipped names a layer for which no zTOC was built, and why.
type Skipped struct {
	// Layer is the layer descriptor.
	Layer ocispec.Descriptor
	// Reason is a short human-readable explanation.
	Reason string
}

// Result describes the SOCI index built for one image manifest.
type Result struct {
	// Manifest is the image manifest indexed (for Convert: the original one).
	Manifest ocispec.Descriptor
	// Annotated is, for Convert, the re-written image manifest that carries
	// the index annotation; zero for Create.
	Annotated ocispec.Descriptor
	// Index is the SOCI index manifest descriptor, with ArtifactType set.
	Index ocispec.Descriptor
	// Ztocs lists the zTOC descriptors in the index, in layer order.
	Ztocs []ocispec.Descriptor
	// Skipped lists the layers left out of the index.
	Skipped []Skipped
}
