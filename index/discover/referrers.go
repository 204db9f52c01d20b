package discover

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
)

// v2Annotation fetches the image manifest from repository name and returns
// the digest its com.amazon.soci.index-digest annotation names, or "".
func (d *Discoverer) v2Annotation(ctx context.Context, name string, manifest digest.Digest) (digest.Digest, error) {
	mt, b, err := d.fetchManifest(ctx, name, manifest)
	if err != nil {
		return "", fmt.Errorf("fetch image manifest %s from %s: %w", manifest, name, err)
	}
	var m struct {
		MediaType   string            `json:"mediaType"`
		Manifests   json.RawMessage   `json:"manifests"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("decode image manifest %s from %s: %w", manifest, name, err)
	}
	if mt == ocispec.MediaTypeImageIndex || m.Manifests != nil {
		return "", fmt.Errorf("image manifest %s from %s is an image index; want a platform-specific manifest", manifest, name)
	}
	v, ok := m.Annotations[index.AnnotationIndexDigest]
	if !ok {
		return "", nil
	}
	dg, err := digest.Parse(v)
	if err != nil {
		return "", fmt.Errorf("image manifest %s from %s: annotation %s %q: %w", manifest, name, index.AnnotationIndexDigest, v, err)
	}
	return dg, nil
}

// findV2 returns the v2 index named by the image manifest, (nil, nil) when
// it names none, and a skippable error when the named index is missing or
// malformed (the v1 search then still runs).
func (d *Discoverer) findV2(ctx context.Context, t target, manifest digest.Digest) (*Result, error) {
	dg, err := d.v2Annotation(ctx, t.image, manifest)
	if err != nil || dg == "" {
		return nil, err
	}
	return d.fetchIndexAnywhere(ctx, t, ocispec.Descriptor{Digest: dg}, MethodV2Annotation)
}

// listV1 lists the v1 indices of manifest in repos (some or all of t's),
// in the order Find prefers them. With all, the fallback tag is read even
// where the referrers API answered with indices.
func (d *Discoverer) listV1(ctx context.Context, t target, repos []string, manifest digest.Digest, all bool) ([]Found, error) {
	var found []Found
	for _, name := range repos {
		f, err := d.listRepo(ctx, name, manifest, all)
		if err != nil {
			return nil, err
		}
		found = append(found, f...)
	}
	return rank(dedup(found), t.index), nil
}

func (d *Discoverer) listRepo(ctx context.Context, name string, manifest digest.Digest, all bool) ([]Found, error) {
	e, err := d.repos.get(name)
	if err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("referrers of %s at %s: %w", manifest, name, err)
	}
	if err := e.probe(ctx); err != nil {
		if isNotFound(err) {
			return nil, nil // no such repository: nothing is listed there
		}
		return nil, wrap(err)
	}
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: manifest}
	var listed []ocispec.Descriptor
	err = e.repo.Referrers(ctx, subject, index.ArtifactTypeV1, func(page []ocispec.Descriptor) error {
		listed = append(listed, page...)
		return nil
	})
	method := MethodReferrersAPI
	if !e.apiSupported() {
		method = MethodFallbackTag
	}
	switch {
	case err == nil:
	case isNotFound(err) && !apiUnavailable(err, e.repo.Reference.Host()):
		return nil, nil // NAME_UNKNOWN: no such repository
	case apiUnavailable(err, e.repo.Reference.Host()):
		// Broken for this request even though the probe passed: fall back.
		listed, method = nil, MethodFallbackTag
	default:
		return nil, wrap(err)
	}
	out := asFound(listed, method, name)
	if method == MethodReferrersAPI && (len(listed) == 0 || all) || len(listed) == 0 && err != nil {
		tagged, err := d.readFallbackTag(ctx, e, manifest)
		if err != nil {
			return nil, wrap(err)
		}
		out = append(out, asFound(tagged, MethodFallbackTag, name)...)
	}
	return out, nil
}

func asFound(descs []ocispec.Descriptor, m Method, repo string) []Found {
	out := make([]Found, 0, len(descs))
	for _, d := range descs {
		if d.ArtifactType != index.ArtifactTypeV1 || d.Digest.Validate() != nil {
			continue // the registry did not filter, or listed junk
		}
		out = append(out, Found{Descriptor: d, Method: m, Repository: repo})
	}
	return out
}

// readFallbackTag reads the sha256-<hex> tag index of repository e itself,
// for the cases oras does not fall back on. A missing tag lists nothing.
func (d *Discoverer) readFallbackTag(ctx context.Context, e *repoEntry, manifest digest.Digest) ([]ocispec.Descriptor, error) {
	tag := fallbackTag(manifest)
	desc, rc, err := e.repo.Manifests().FetchReference(ctx, tag)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("fallback tag %s: %w", tag, err)
	}
	defer rc.Close()
	if desc.MediaType != ocispec.MediaTypeImageIndex || desc.Digest == manifest {
		return nil, nil // not a referrers index (some registries resolve it to the subject)
	}
	b, err := readVerified(rc, desc.Size, desc.Digest, index.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("fallback tag %s: %w", tag, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("fallback tag %s: decode image index: %w", tag, err)
	}
	return idx.Manifests, nil
}

// fallbackTag is the distribution-spec tag schema: <alg>-<encoded>, the
// algorithm cut to 32 and the encoded part to 64 characters.
func fallbackTag(dg digest.Digest) string {
	alg, enc := string(dg.Algorithm()), dg.Encoded()
	if len(alg) > 32 {
		alg = alg[:32]
	}
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return alg + "-" + enc
}

// dedup keeps the first entry of each digest (index repository before image
// repository, API before fallback tag).
func dedup(found []Found) []Found {
	seen := make(map[digest.Digest]bool, len(found))
	out := found[:0]
	for _, f := range found {
		if !seen[f.Descriptor.Digest] {
			seen[f.Descriptor.Digest] = true
			out = append(out, f)
		}
	}
	return out
}

// rank orders candidates as the package doc states: newest created
// annotation first, dated before undated, index repository first, then
// lowest digest.
func rank(found []Found, indexRepo string) []Found {
	created := func(f Found) (time.Time, bool) {
		t, err := time.Parse(time.RFC3339Nano, f.Descriptor.Annotations[AnnotationCreated])
		return t, err == nil
	}
	sort.SliceStable(found, func(i, j int) bool {
		ti, oki := created(found[i])
		tj, okj := created(found[j])
		if oki != okj {
			return oki
		}
		if oki && !ti.Equal(tj) {
			return ti.After(tj)
		}
		ii, ij := found[i].Repository == indexRepo, found[j].Repository == indexRepo
		if ii != ij {
			return ii
		}
		return found[i].Descriptor.Digest < found[j].Descriptor.Digest
	})
	return found
}

// checkSubject rejects a listed v1 index whose subject names another image
// manifest.
func checkSubject(idx *index.Index, manifest digest.Digest) error {
	if s := idx.Manifest.Subject; s != nil && s.Digest != manifest {
		return fmt.Errorf("index subject %s, want %s: %w", s.Digest, manifest, errSubjectMismatch)
	}
	return nil
}
