// Package discover finds the SOCI index of an image and the zTOC of each of
// its layers in a registry.
//
// Given an image reference and the digest of its platform-specific image
// manifest, Find looks, in this order, for:
//  1. an explicit index digest (snapshot label or CLI flag), used as is;
//  2. a v2 index named by the com.amazon.soci.index-digest annotation of the
//     image manifest (fetched from the registry, not from a local store);
//  3. v1 indices that name the manifest as subject, listed with the OCI
//     referrers API (artifactType filter; filtered client-side when the
//     registry did not; pagination followed up to a bound);
//  4. v1 indices listed in the sha256-<hex> fallback tag.
//
// Steps 3 and 4 use oras-go's Repository, one per repository and kept for
// the Discoverer's life, so the referrers capability is learned once. On top
// of oras, this package treats more answers as "the API is unavailable" and
// reads the fallback tag instead of failing: a 200 that is not an OCI index
// (an HTML page, a login page reached by redirect), any answer served from
// another host after a redirect, a 400, and a 404 without NAME_UNKNOWN
// (distribution-spec v1.1.1, "Unavailable Referrers API",
// https://github.com/opencontainers/distribution-spec/blob/v1.1.1/spec.md#unavailable-referrers-api).
// Where the API works but lists no SOCI index, the fallback tag is read too
// and the two lists merged, de-duplicated by digest: images copied from a
// registry without the API carry only the tag.
//
// Index repositories: Options.IndexRepos maps an image repository to a
// separate repository holding its indices (and their zTOCs). Where one is
// configured, it is searched before the image repository and zTOCs are
// fetched from it first; elsewhere only the image repository is used.
//
// Choice among several v1 indices (deterministic, unlike the reference,
// which takes whichever the registry lists first): the one whose
// org.opencontainers.image.created annotation is the latest wins; indices
// with a valid timestamp beat those without; remaining ties go to the index
// found in the index repository, then to the lowest digest. Candidates that
// turn out to be missing (a dangling fallback-tag entry) or malformed are
// skipped in favour of the next.
//
// Caching: results are cached per repository and manifest digest for
// Options.TTL; failures (ErrNoIndex included, since an index may be pushed
// later) for the shorter Options.NegativeTTL, never for the daemon's life.
// Cancellation and refusals (ErrUnauthorized) are never cached. Concurrent
// lookups of one key share a single registry round.
//
// Trust: a v1 index is attached to an image by anyone who may push to its
// repository (a referrer, or the sha256-<hex> tag), and its zTOCs say which
// files the layer holds, where and with which modes; nothing ties them to
// the image's digest. Options.V1Repos restricts v1 indices to repositories
// the operator trusts; Find then fails with index.ErrIndexNotTrusted for
// other images that have no v2 index. A v2 index is named by the image
// manifest itself, and an explicit digest by the caller, so both are
// always used.
//
// Hazards: everything read from a registry is bounded (manifests and
// indices to index.MaxSize, zTOCs to Options.MaxZtocSize) and verified
// against its digest before it is decoded. A zTOC is then held for its
// mount's life, so its entries and spans are bounded too, and LayerZtoc
// keeps the zTOCs in use under Options.ZtocBudget (limits.go).
package discover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/redact"
)

// Method says how an index was found.
type Method string

// The ways an index can be found.
const (
	// MethodExplicit: the caller named the index digest.
	MethodExplicit Method = "explicit"
	// MethodV2Annotation: the image manifest's com.amazon.soci.index-digest.
	MethodV2Annotation Method = "v2-annotation"
	// MethodReferrersAPI: listed by the registry's referrers API.
	MethodReferrersAPI Method = "referrers-api"
	// MethodFallbackTag: listed in the sha256-<hex> fallback tag.
	MethodFallbackTag Method = "fallback-tag"
)

// Default TTLs, used when Options leaves them zero.
const (
	DefaultTTL         = 10 * time.Minute
	DefaultNegativeTTL = 30 * time.Second
)

// AnnotationCreated is the OCI annotation used to prefer the newest index.
const AnnotationCreated = ocispec.AnnotationCreated

// Found is one index found for an image manifest.
type Found struct {
	// Descriptor is the index manifest's descriptor. Its size is known for
	// indices found by listing, and zero for explicit and v2 ones until
	// fetched.
	Descriptor ocispec.Descriptor
	// Method says how it was found.
	Method Method
	// Repository is "host/repo" of the repository holding the index.
	Repository string
}

// Result is the index chosen for an image manifest.
type Result struct {
	Found
	// Index is the decoded, validated index.
	Index *index.Index
}

// Options configures a Discoverer. The zero value is usable.
type Options struct {
	// NewRepository makes the client of one repository, "host/repo"; cmd
	// supplies credentials and plain-HTTP choices here. Nil means
	// DefaultRepository.
	NewRepository RepositoryFactory
	// IndexRepos maps an image repository ("host/repo") to the repository
	// holding its indices ("host/other").
	IndexRepos map[string]string
	// DisableV1 skips referrers and fallback-tag discovery.
	DisableV1 bool
	// DisableV2 skips the image manifest annotation.
	DisableV2 bool
	// V1Repos, when not empty, restricts v1 indices to those found in
	// repositories named by one of its entries: "host" (the whole
	// registry), "host/path" (that repository and those under it). A v1
	// index can be attached to an image by anyone who may push to its
	// repository, whereas a v2 index is bound by the image manifest's own
	// digest, so v2 indices and explicit index digests are not restricted.
	V1Repos []string
	// MaxZtocSize bounds the size of a zTOC blob, checked from the index's
	// descriptor before the download and enforced on the read
	// (DefaultMaxZtocSize when zero, never above ztoc.MaxSize; negative:
	// ztoc.MaxSize).
	MaxZtocSize int64
	// MaxZtocEntries bounds the entries of a zTOC (DefaultMaxZtocEntries
	// when zero; negative: no bound).
	MaxZtocEntries int
	// MaxZtocSpans bounds the spans of a zTOC (DefaultMaxZtocSpans when
	// zero; negative: no bound).
	MaxZtocSpans int
	// ZtocBudget bounds the estimated memory of the zTOCs LayerZtoc has
	// handed out and that are still in use (DefaultZtocBudget when zero;
	// negative: no bound).
	ZtocBudget int64
	// TTL is how long a found index is cached (DefaultTTL when zero).
	TTL time.Duration
	// NegativeTTL is how long a failed or empty lookup is cached
	// (DefaultNegativeTTL when zero; negative disables it).
	NegativeTTL time.Duration
	// Now is the clock (time.Now when nil); tests inject their own.
	Now func() time.Time
}

// Discoverer finds SOCI indices and zTOCs. It is safe for concurrent use.
type Discoverer struct {
	opts   Options
	limits limits
	budget *budget
	repos  *repoCache
	cache  *resultCache
	group  singleflight.Group
}

// New returns a Discoverer with the given options.
func New(opts Options) *Discoverer {
	if opts.NewRepository == nil {
		opts.NewRepository = DefaultRepository
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ZtocBudget == 0 {
		opts.ZtocBudget = DefaultZtocBudget
	}
	return &Discoverer{
		opts:   opts,
		limits: newLimits(opts),
		budget: newBudget(opts.ZtocBudget),
		repos:  newRepoCache(opts.NewRepository),
		cache:  newResultCache(),
	}
}

// target is a parsed image reference: the repositories to search.
type target struct {
	image string // host/repo of the image
	index string // host/repo of the configured index repository, or ""
}

// searchRepos returns the repositories to search, index repository first.
func (t target) searchRepos() []string {
	if t.index != "" && t.index != t.image {
		return []string{t.index, t.image}
	}
	return []string{t.image}
}

func (d *Discoverer) parseTarget(imageRef string) (target, error) {
	ref, err := registry.ParseReference(imageRef)
	if err != nil {
		return target{}, fmt.Errorf("parse image reference %q: %w", imageRef, err)
	}
	name := ref.Registry + "/" + ref.Repository
	return target{image: name, index: d.opts.IndexRepos[name]}, nil
}

// Find returns the index chosen for the image manifest with the given digest
// (see the package doc for the order and the choice). explicitIndex, when
// not empty, is used without any search. It returns an error wrapping
// index.ErrNoIndex when the image has no index.
func (d *Discoverer) Find(ctx context.Context, imageRef string, manifest digest.Digest, explicitIndex digest.Digest) (_ *Result, err error) {
	defer func() { err = redact.Error(err) }()
	t, err := d.parseTarget(imageRef)
	if err != nil {
		return nil, err
	}
	if err := manifest.Validate(); err != nil {
		return nil, fmt.Errorf("image manifest digest %q: %w", manifest, err)
	}
	key := t.image + "@" + manifest.String() + "|" + explicitIndex.String()
	if res, err, ok := d.cache.get(key, d.opts.Now()); ok {
		return res, err
	}
	v, err, _ := d.group.Do(key, func() (any, error) {
		res, err := d.find(ctx, t, manifest, explicitIndex)
		err = markUnauthorized(err)
		d.store(key, res, err)
		return res, err
	})
	res, _ := v.(*Result)
	return res, err
}

func (d *Discoverer) store(key string, res *Result, err error) {
	// A refusal is not remembered either: credentials may come any moment
	// (a docker login, a CRI pull that carries them).
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, index.ErrUnauthorized) {
		return
	}
	now := d.opts.Now()
	ttl := d.opts.TTL
	if err != nil {
		ttl = d.opts.NegativeTTL
	}
	if ttl > 0 {
		d.cache.put(key, res, err, now.Add(ttl), now)
	}
}

func (d *Discoverer) find(ctx context.Context, t target, manifest, explicitIndex digest.Digest) (*Result, error) {
	if explicitIndex != "" {
		if err := explicitIndex.Validate(); err != nil {
			return nil, fmt.Errorf("explicit SOCI index digest %q: %w", explicitIndex, err)
		}
		return d.fetchIndexAnywhere(ctx, t, ocispec.Descriptor{Digest: explicitIndex}, MethodExplicit)
	}
	var v2Err error
	if !d.opts.DisableV2 {
		res, err := d.findV2(ctx, t, manifest)
		switch {
		case res != nil:
			return res, nil
		case err != nil && !skippable(err) && !errors.Is(err, index.ErrNoIndex):
			return nil, err
		}
		v2Err = err // a dangling or bad v2 binding: v1 indices may still exist
	}
	if !d.opts.DisableV1 {
		repos := d.v1Repos(t)
		if len(repos) == 0 {
			return nil, notTrusted(t, manifest, v2Err)
		}
		found, err := d.listV1(ctx, t, repos, manifest, false)
		if err != nil {
			return nil, err
		}
		res, err := d.firstValid(ctx, t, manifest, found)
		if err != nil && v2Err != nil {
			return nil, fmt.Errorf("%w (and the v2 binding: %w)", err, v2Err)
		}
		return res, err
	}
	if v2Err != nil {
		return nil, fmt.Errorf("image manifest %s in %s: %w: %w", manifest, t.image, v2Err, index.ErrNoIndex)
	}
	return nil, fmt.Errorf("image manifest %s in %s: %w", manifest, t.image, index.ErrNoIndex)
}

// List returns every index found for the image manifest: the v2 index named
// by its annotation, and every v1 index listed by the referrers API and by
// the fallback tag, de-duplicated by digest, in the order Find prefers them.
// It does not fetch the indices and does not use the cache.
func (d *Discoverer) List(ctx context.Context, imageRef string, manifest digest.Digest) (_ []Found, err error) {
	defer func() { err = redact.Error(markUnauthorized(err)) }()
	t, err := d.parseTarget(imageRef)
	if err != nil {
		return nil, err
	}
	var out []Found
	if !d.opts.DisableV2 {
		dg, err := d.v2Annotation(ctx, t.image, manifest)
		if err != nil {
			return nil, err
		}
		if dg != "" {
			out = append(out, Found{Descriptor: ocispec.Descriptor{
				MediaType: ocispec.MediaTypeImageManifest, ArtifactType: index.ArtifactTypeV2, Digest: dg,
			}, Method: MethodV2Annotation, Repository: t.image})
		}
	}
	if !d.opts.DisableV1 {
		v1, err := d.listV1(ctx, t, t.searchRepos(), manifest, true)
		if err != nil {
			return nil, err
		}
		out = append(out, v1...)
	}
	return out, nil
}

// firstValid fetches the candidates in order and returns the first that is
// present and well-formed.
func (d *Discoverer) firstValid(ctx context.Context, t target, manifest digest.Digest, found []Found) (*Result, error) {
	var skipped []error
	for _, f := range found {
		idx, desc, err := d.fetchIndex(ctx, f.Repository, f.Descriptor)
		if err == nil {
			err = checkSubject(idx, manifest)
		}
		if err == nil {
			f.Descriptor = desc
			return &Result{Found: f, Index: idx}, nil
		}
		if !skippable(err) {
			return nil, err
		}
		skipped = append(skipped, err)
	}
	if len(skipped) > 0 {
		return nil, fmt.Errorf("image manifest %s in %s: no usable index (%w): %w",
			manifest, t.image, errors.Join(skipped...), index.ErrNoIndex)
	}
	return nil, fmt.Errorf("image manifest %s in %s: %w", manifest, t.image, index.ErrNoIndex)
}
