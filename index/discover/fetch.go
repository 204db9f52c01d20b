package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/redact"
	"github.com/ociseek/ociseek/ztoc"
)

// errSubjectMismatch marks a listed v1 index whose subject is another
// manifest; such a candidate is skipped.
var errSubjectMismatch = errors.New("subject is another manifest")

// skippable reports a candidate failure that should not stop the search:
// the index is missing (a dangling list entry) or unusable.
func skippable(err error) bool {
	return isNotFound(err) || errors.Is(err, index.ErrInvalid) || errors.Is(err, errSubjectMismatch)
}

// readVerified reads exactly desc.Size bytes of rc, refusing sizes above
// limit before reading anything, and checks them against want. It never
// allocates from the declared size: the buffer grows with the bytes that
// actually arrive.
func readVerified(rc io.Reader, size int64, want digest.Digest, limit int64) ([]byte, error) {
	if size < 0 || size > limit {
		return nil, fmt.Errorf("size %d outside the accepted 0..%d bytes", size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	switch {
	case int64(len(b)) < size:
		return nil, fmt.Errorf("truncated body: %d of %d bytes", len(b), size)
	case int64(len(b)) > size:
		return nil, fmt.Errorf("body longer than the declared %d bytes", size)
	}
	if got := want.Algorithm().FromBytes(b); got != want {
		return nil, fmt.Errorf("digest mismatch: content is %s, want %s", got, want)
	}
	return b, nil
}

// fetchManifest fetches a manifest by digest from repository name, bounded
// and verified, and returns its media type and bytes.
func (d *Discoverer) fetchManifest(ctx context.Context, name string, dg digest.Digest) (string, []byte, error) {
	e, err := d.repos.get(name)
	if err != nil {
		return "", nil, err
	}
	desc, rc, err := e.repo.Manifests().FetchReference(ctx, dg.String())
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	if desc.Digest != "" && desc.Digest != dg {
		return "", nil, fmt.Errorf("registry answered with manifest %s", desc.Digest)
	}
	b, err := readVerified(rc, desc.Size, dg, index.MaxSize)
	if err != nil {
		return "", nil, err
	}
	return desc.MediaType, b, nil
}

// fetchIndex fetches and validates the index desc names from repository
// name, and returns it with its full descriptor.
func (d *Discoverer) fetchIndex(ctx context.Context, name string, desc ocispec.Descriptor) (*index.Index, ocispec.Descriptor, error) {
	mt, b, err := d.fetchManifest(ctx, name, desc.Digest)
	if err != nil {
		return nil, desc, fmt.Errorf("fetch SOCI index %s from %s: %w", desc.Digest, name, err)
	}
	if mt != ocispec.MediaTypeImageManifest {
		return nil, desc, fmt.Errorf("fetch SOCI index %s from %s: served as %q: %w", desc.Digest, name, mt, index.ErrInvalid)
	}
	idx, err := index.Parse(b)
	if err != nil {
		return nil, desc, fmt.Errorf("SOCI index %s from %s: %w", desc.Digest, name, err)
	}
	return idx, ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: idx.Version().ArtifactType(),
		Digest:       desc.Digest,
		Size:         int64(len(b)),
		Annotations:  idx.Manifest.Annotations,
	}, nil
}

// fetchIndexAnywhere fetches an index known only by digest from the first
// repository of t that has it.
func (d *Discoverer) fetchIndexAnywhere(ctx context.Context, t target, desc ocispec.Descriptor, m Method) (*Result, error) {
	repos := t.searchRepos()
	for _, name := range repos {
		idx, full, err := d.fetchIndex(ctx, name, desc)
		if err == nil {
			return &Result{Found: Found{Descriptor: full, Method: m, Repository: name}, Index: idx}, nil
		}
		if !isNotFound(err) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("SOCI index %s (%s) not found in %s: %w", desc.Digest, m, strings.Join(repos, ", "), index.ErrNoIndex)
}

// FetchZtoc fetches, verifies and decodes the zTOC desc names, for the image
// imageRef: from its index repository first when one is configured, else
// from the image repository. It returns the decoded zTOC and its bytes (the
// zTOC's checkpoint windows alias them). A zTOC over the Options bounds
// gives an error wrapping index.ErrZtocTooLarge; the size bound is checked
// from desc before anything is downloaded.
func (d *Discoverer) FetchZtoc(ctx context.Context, imageRef string, desc ocispec.Descriptor) (_ *ztoc.Ztoc, _ []byte, err error) {
	defer func() { err = redact.Error(err) }()
	t, err := d.parseTarget(imageRef)
	if err != nil {
		return nil, nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, nil, fmt.Errorf("zTOC digest %q: %w", desc.Digest, err)
	}
	if desc.Size <= 0 {
		return nil, nil, fmt.Errorf("zTOC %s: size %d is not positive", desc.Digest, desc.Size)
	}
	if err := d.limits.checkSize(desc.Digest, desc.Size); err != nil {
		return nil, nil, err
	}
	var lastErr error
	for _, name := range t.searchRepos() {
		b, err := d.fetchBlob(ctx, name, desc)
		if isNotFound(err) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		z, err := ztoc.Unmarshal(b)
		if err != nil {
			return nil, nil, fmt.Errorf("decode zTOC %s from %s: %w", desc.Digest, name, err)
		}
		if err := d.limits.checkDecoded(desc.Digest, z); err != nil {
			return nil, nil, fmt.Errorf("zTOC from %s: %w", name, err)
		}
		return z, b, nil
	}
	return nil, nil, lastErr
}

func (d *Discoverer) fetchBlob(ctx context.Context, name string, desc ocispec.Descriptor) ([]byte, error) {
	e, err := d.repos.get(name)
	if err != nil {
		return nil, err
	}
	rc, err := e.repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("fetch zTOC %s from %s: %w", desc.Digest, name, err)
	}
	defer rc.Close()
	// desc.Size comes from the index and was checked against the bound;
	// readVerified reads no more than that, whatever the registry sends.
	b, err := readVerified(rc, desc.Size, desc.Digest, d.limits.maxSize())
	if err != nil {
		return nil, fmt.Errorf("fetch zTOC %s from %s: %w", desc.Digest, name, err)
	}
	return b, nil
}

// LayerZtoc finds the index of the image manifest (as Find does, cached) and
// returns the decoded zTOC of one of its layers. It returns an error
// wrapping index.ErrNoIndex when the image has no index and index.ErrNoZtoc
// when the index does not cover the layer, so that callers can choose to
// fetch the layer whole; likewise index.ErrZtocTooLarge for a zTOC over the
// bounds and index.ErrZtocBudget when the zTOCs handed out and still in use
// would exceed Options.ZtocBudget. A returned zTOC counts against the
// budget until it is garbage.
func (d *Discoverer) LayerZtoc(ctx context.Context, imageRef string, manifest, explicitIndex, layer digest.Digest) (_ *ztoc.Ztoc, err error) {
	defer func() { err = redact.Error(err) }()
	res, err := d.Find(ctx, imageRef, manifest, explicitIndex)
	if err != nil {
		return nil, err
	}
	zd, err := res.Index.ZtocFor(layer)
	if err != nil {
		return nil, fmt.Errorf("SOCI index %s of %s: %w", res.Descriptor.Digest, imageRef, err)
	}
	if !d.budget.fits(zd.Size) {
		return nil, fmt.Errorf("zTOC %s of %s: %d bytes with %d of the %d byte budget of mounted zTOCs in use: %w",
			zd.Digest, imageRef, zd.Size, d.budget.inUse(), d.budget.limit, index.ErrZtocBudget)
	}
	z, raw, err := d.FetchZtoc(ctx, imageRef, zd)
	if err != nil {
		return nil, err
	}
	if err := d.budget.hold(zd.Digest, z, raw); err != nil {
		return nil, fmt.Errorf("layer %s of %s: %w", layer, imageRef, err)
	}
	return z, nil
}
