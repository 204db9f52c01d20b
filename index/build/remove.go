package build

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/index"
)

// RemoveResult says what Remove did.
type RemoveResult struct {
	// Index is the deleted SOCI index manifest.
	Index ocispec.Descriptor
	// Subject is the v1 index's subject; nil for a v2 index.
	Subject *ocispec.Descriptor
	// TagUpdated is set when the index was taken out of the subject's
	// fallback tag index.
	TagUpdated bool
	// TagDeleted is set when that left the tag empty and it was deleted.
	TagDeleted bool
}

// Remove deletes the SOCI index manifest dgst from repo and takes it out of
// its subject's fallback tag index, deleting the tag when it becomes
// empty. The manifest is deleted first, so a registry that refuses
// deletes leaves everything as it was. zTOC blobs are left to the
// registry's garbage collection (other indices may share them).
func Remove(ctx context.Context, repo registry.Repository, dgst digest.Digest, opts PublishOptions) (*RemoveResult, error) {
	where := describe(repo)
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("remove SOCI index %q: %w", dgst, err)
	}
	d, err := repo.Resolve(ctx, dgst.String())
	if err != nil {
		return nil, fmt.Errorf("resolve SOCI index %s at %s: %w", dgst, where, err)
	}
	buf, err := fetchBounded(ctx, repo, d, "SOCI index", where)
	if err != nil {
		return nil, err
	}
	idx, err := index.Parse(buf)
	if err != nil {
		return nil, fmt.Errorf("remove %s at %s: %w", dgst, where, err)
	}
	m := idx.Manifest
	// A descriptor without a media type makes oras delete the manifest
	// as it is, without its own (not race-aware) fallback-tag update:
	// the tag is ours to converge below.
	if err := repo.Manifests().Delete(ctx, ocispec.Descriptor{Digest: d.Digest, Size: d.Size}); err != nil {
		return nil, fmt.Errorf("delete SOCI index %s at %s: %w", dgst, where, err)
	}
	res := &RemoveResult{Index: d, Subject: m.Subject}
	if m.Subject == nil {
		return res, nil
	}
	p := &publisher{repo: repo, opts: opts, where: where}
	tag := FallbackTag(m.Subject.Digest)
	superseded, err := p.converge(ctx, tag, withoutReferrer(dgst))
	if err != nil {
		return res, fmt.Errorf("deleted SOCI index %s, but: %w", dgst, err)
	}
	// Registries that keep manifests an index still references (olareg
	// does, for the fallback tag index we just rewrote) may have kept it:
	// now that nothing lists it, delete it again.
	if ok, err := repo.Exists(ctx, d); err == nil && ok {
		if err := repo.Manifests().Delete(ctx, ocispec.Descriptor{Digest: d.Digest, Size: d.Size}); err != nil && !errors.Is(err, errdef.ErrNotFound) {
			return res, fmt.Errorf("delete SOCI index %s at %s after untagging: %w", dgst, where, err)
		}
	}
	res.TagUpdated = len(superseded) > 0
	if res.TagUpdated {
		after, err := readTag(ctx, repo, tag, where)
		if err != nil {
			return res, fmt.Errorf("deleted SOCI index %s, but: %w", dgst, err)
		}
		res.TagDeleted = !after.found
	}
	p.collect(ctx, tag, superseded)
	return res, nil
}

// withoutReferrer is the wanted fallback-tag state after removing dgst.
func withoutReferrer(dgst digest.Digest) convergence {
	return convergence{
		ok: func(t tagIndex) bool { return !t.has(dgst) },
		fix: func(t tagIndex) []ocispec.Descriptor {
			var rest []ocispec.Descriptor
			for _, r := range t.referrers {
				if r.Digest != dgst {
					rest = append(rest, r)
				}
			}
			return rest
		},
		what: "SOCI index " + dgst.String() + " still listed",
	}
}
