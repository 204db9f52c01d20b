package build

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/index"
)

// ErrNoZtocs reports an image (or platform) none of whose layers got a
// zTOC: all too small, compressed with zstd, and so on.
var ErrNoZtocs = errors.New("no zTOCs built")

// CreateOptions are the options of Create.
type CreateOptions struct {
	Options
	// Publish tunes the fallback-tag maintenance.
	Publish PublishOptions
}

// Create builds a v1 SOCI index for each selected platform of the image
// that ref (a tag or digest) names in image, streaming every layer from the
// registry into the zTOC builder, and publishes it with the image manifest
// as subject to indexRepo (nil means image). It returns one Result per
// indexed platform; platforms without any zTOC are left out, and when no
// platform gets one the error wraps ErrNoZtocs.
//
// On registries without the referrers API, Create maintains the subject's
// fallback tag and returns only once its index has stayed listed there
// (see PublishOptions); concurrent Creates for one subject all end up
// listed. When image or indexRepo is an oras *remote.Repository, Create
// sets its SkipReferrersGC.
func Create(ctx context.Context, image registry.Repository, ref string, indexRepo registry.Repository, opts CreateOptions) ([]Result, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if indexRepo == nil {
		indexRepo = image
	}
	where := describe(image)
	root, err := image.Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: %w", ref, where, err)
	}
	entries, _, err := imageEntries(ctx, image, root, where)
	if err != nil {
		return nil, err
	}
	sel, err := selectManifests(entries, opts.Options)
	if err != nil {
		return nil, fmt.Errorf("image %s at %s: %w", ref, where, err)
	}
	lb := &layerBuilder{src: image, dst: indexRepo, opts: opts.Options, where: where}
	pub := &publisher{repo: indexRepo, opts: opts.Publish, where: describe(indexRepo)}
	var out []Result
	for _, i := range sel {
		res, err := createOne(ctx, lb, pub, entries[i])
		if errors.Is(err, ErrNoZtocs) && len(sel) > 1 {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, *res)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("image %s at %s: %w", ref, where, ErrNoZtocs)
	}
	return out, nil
}

// createOne builds and publishes the v1 index of one image manifest.
func createOne(ctx context.Context, lb *layerBuilder, pub *publisher, manifest ocispec.Descriptor) (*Result, error) {
	m, err := fetchManifest(ctx, lb.src, manifest, lb.where)
	if err != nil {
		return nil, err
	}
	ztocs, skipped, err := lb.buildAll(ctx, manifest, m)
	if err != nil {
		return nil, err
	}
	if len(ztocs) == 0 {
		return nil, fmt.Errorf("manifest %s (%s): %w", manifest.Digest, platformString(manifest.Platform), ErrNoZtocs)
	}
	tool := lb.opts.buildTool()
	idx, body, err := sociIndex(ztocs, subjectOf(manifest), tool)
	if err != nil {
		return nil, err
	}
	cfg := emptyConfigDesc(index.ArtifactTypeV1)
	if err := pushIfAbsent(ctx, lb.dst, cfg, index.EmptyConfig()); err != nil {
		return nil, fmt.Errorf("push SOCI index config to %s: %w", pub.where, err)
	}
	annotations := map[string]string{index.AnnotationBuildToolIdentifier: tool}
	if err := pub.publishV1(ctx, *subjectOf(manifest), idx, body, annotations); err != nil {
		return nil, err
	}
	return &Result{Manifest: manifest, Index: idx, Ztocs: ztocs, Skipped: skipped}, nil
}

func platformString(p *ocispec.Platform) string {
	if p == nil {
		return "unknown platform"
	}
	return platforms.Format(*p)
}
