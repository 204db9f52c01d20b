package build

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// Docker manifest media types, accepted wherever their OCI twins are.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

func isImageManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest
}

func isImageIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
}

// describe names a store in error messages: the registry host and
// repository, or the layout directory.
func describe(t any) string {
	switch s := t.(type) {
	case *orasremote.Repository:
		return fmt.Sprintf("registry %s/%s", s.Reference.Registry, s.Reference.Repository)
	case *Layout:
		return "layout " + s.Root()
	default:
		return fmt.Sprintf("%T", t)
	}
}

// fetchBounded reads a manifest, index or config, refusing anything larger
// than MaxManifestBytes and verifying size and digest.
func fetchBounded(ctx context.Context, src content.Fetcher, d ocispec.Descriptor, what, where string) ([]byte, error) {
	if d.Size < 0 || d.Size > MaxManifestBytes {
		return nil, fmt.Errorf("fetch %s %s from %s: size %d exceeds the %d-byte limit", what, d.Digest, where, d.Size, MaxManifestBytes)
	}
	rc, err := src.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s %s from %s: %w", what, d.Digest, where, err)
	}
	defer rc.Close()
	buf, err := content.ReadAll(rc, d)
	if err != nil {
		return nil, fmt.Errorf("read %s %s from %s: %w", what, d.Digest, where, err)
	}
	return buf, nil
}

// fetchManifest fetches and decodes an image manifest.
func fetchManifest(ctx context.Context, src content.Fetcher, d ocispec.Descriptor, where string) (*ocispec.Manifest, error) {
	buf, err := fetchBounded(ctx, src, d, "image manifest", where)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(buf, &m); err != nil {
		return nil, fmt.Errorf("decode image manifest %s from %s: %w", d.Digest, where, err)
	}
	if m.SchemaVersion != 2 || m.Config.Digest == "" {
		return nil, fmt.Errorf("decode image manifest %s from %s: not an image manifest (schemaVersion %d, no config)", d.Digest, where, m.SchemaVersion)
	}
	return &m, nil
}

// fetchIndex fetches and decodes an image index or Docker manifest list.
func fetchIndex(ctx context.Context, src content.Fetcher, d ocispec.Descriptor, where string) (*ocispec.Index, error) {
	buf, err := fetchBounded(ctx, src, d, "image index", where)
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(buf, &idx); err != nil {
		return nil, fmt.Errorf("decode image index %s from %s: %w", d.Digest, where, err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("decode image index %s from %s: schemaVersion %d, want 2", d.Digest, where, idx.SchemaVersion)
	}
	return &idx, nil
}

// configPlatform reads the platform of a single-manifest image from its
// config, as the AWS tooling does when it wraps such an image in an index.
func configPlatform(ctx context.Context, src content.Fetcher, m *ocispec.Manifest, where string) (ocispec.Platform, error) {
	buf, err := fetchBounded(ctx, src, m.Config, "image config", where)
	if err != nil {
		return ocispec.Platform{}, err
	}
	var img ocispec.Image
	if err := json.Unmarshal(buf, &img); err != nil {
		return ocispec.Platform{}, fmt.Errorf("decode image config %s from %s: %w", m.Config.Digest, where, err)
	}
	return img.Platform, nil
}

// imageEntries returns the manifests an image reference names: the entries
// of its index, or the manifest itself with its platform filled in from the
// config. idx is the decoded index, nil in the latter case.
func imageEntries(ctx context.Context, src content.Fetcher, root ocispec.Descriptor, where string) (entries []ocispec.Descriptor, idx *ocispec.Index, err error) {
	switch {
	case isImageIndex(root.MediaType):
		idx, err = fetchIndex(ctx, src, root, where)
		if err != nil {
			return nil, nil, err
		}
		return idx.Manifests, idx, nil
	case isImageManifest(root.MediaType):
		m, err := fetchManifest(ctx, src, root, where)
		if err != nil {
			return nil, nil, err
		}
		p, err := configPlatform(ctx, src, m, where)
		if err != nil {
			return nil, nil, err
		}
		entry := ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: root.Size, Platform: &p}
		return []ocispec.Descriptor{entry}, nil, nil
	default:
		return nil, nil, fmt.Errorf("image %s at %s: media type %q is neither an image manifest nor an index", root.Digest, where, root.MediaType)
	}
}

// selectManifests returns the positions in entries of the image manifests
// to index: all of them, the requested platforms, or by default the host
// platform (or the only manifest there is).
func selectManifests(entries []ocispec.Descriptor, o Options) ([]int, error) {
	var cands []int
	for i, e := range entries {
		// Entries with an artifactType are SOCI indices, signatures and the
		// like: never images to index.
		if isImageManifest(e.MediaType) && e.ArtifactType == "" {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("image has no image manifests")
	}
	if o.AllPlatforms {
		return cands, nil
	}
	want := o.Platforms
	if len(want) == 0 {
		if len(cands) == 1 {
			return cands, nil
		}
		want = []ocispec.Platform{platforms.DefaultSpec()}
	}
	var out []int
	seen := map[int]bool{}
	for _, p := range want {
		i, ok := bestMatch(entries, cands, p)
		if !ok {
			return nil, fmt.Errorf("image has no manifest for platform %s", platforms.Format(p))
		}
		if !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	return out, nil
}

// bestMatch picks the entry that best fits platform p (containerd's
// matching rules, so "linux/arm64" finds "linux/arm64/v8").
func bestMatch(entries []ocispec.Descriptor, cands []int, p ocispec.Platform) (int, bool) {
	mc := platforms.Only(p)
	var ok []int
	for _, i := range cands {
		if entries[i].Platform != nil && mc.Match(*entries[i].Platform) {
			ok = append(ok, i)
		}
	}
	if len(ok) == 0 {
		return 0, false
	}
	sort.SliceStable(ok, func(a, b int) bool { return mc.Less(*entries[ok[a]].Platform, *entries[ok[b]].Platform) })
	return ok[0], true
}

// ParsePlatforms parses "os/arch[/variant]" strings for Options.Platforms.
func ParsePlatforms(specs []string) ([]ocispec.Platform, error) {
	out := make([]ocispec.Platform, 0, len(specs))
	for _, s := range specs {
		p, err := platforms.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}
