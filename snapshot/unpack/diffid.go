package unpack

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// maxConfigBytes bounds the image manifest and config read to find a
// diffID; real ones are a few KiB (containerd's own manifest limit is
// 4 MiB).
const maxConfigBytes = 4 << 20

// diffIDFromConfig returns the diffID of layer as the image config records
// it: the config of the manifest whose digest containerd passed, at the
// layer's position in that manifest.
//
// containerd clients before 2.0 (nerdctl 1.7 embeds containerd 1.7) do not
// put the diffID on the unpack Prepare as snapshots.LabelSnapshotDiffID.
// Without this fallback the daemon could not unpack an unindexed layer
// itself, Prepare succeeded, and containerd's unpacker then downloaded
// that layer and every layer above it, lazy ones included. Reading the
// config keeps the check containerd's applier makes (the tar stream must
// hash to the config's diffID), so a snapshot named by a chain ID never
// holds other content.
func diffIDFromConfig(ctx context.Context, repo *orasremote.Repository, manifest, layer digest.Digest) (digest.Digest, error) {
	var m ocispec.Manifest
	if err := fetchJSON(ctx, repo, manifest, true, &m); err != nil {
		return "", fmt.Errorf("manifest %s: %w", manifest, err)
	}
	pos := -1
	for i, l := range m.Layers {
		if l.Digest == layer {
			pos = i
			break
		}
	}
	if pos < 0 {
		return "", fmt.Errorf("layer %s is not in manifest %s", layer, manifest)
	}
	var cfg ocispec.Image
	if err := fetchJSON(ctx, repo, m.Config.Digest, false, &cfg); err != nil {
		return "", fmt.Errorf("config %s of manifest %s: %w", m.Config.Digest, manifest, err)
	}
	if n := len(cfg.RootFS.DiffIDs); n != len(m.Layers) {
		return "", fmt.Errorf("config %s lists %d diffIDs for %d layers", m.Config.Digest, n, len(m.Layers))
	}
	d := cfg.RootFS.DiffIDs[pos]
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("config %s: diffID %d: %w", m.Config.Digest, pos, err)
	}
	return d, nil
}

// fetchJSON reads the manifest or blob d from repo, checks its size and
// digest, and decodes it into v.
func fetchJSON(ctx context.Context, repo *orasremote.Repository, d digest.Digest, manifest bool, v any) error {
	var store interface {
		content.Resolver
		content.Fetcher
	} = repo.Blobs()
	if manifest {
		store = repo.Manifests()
	}
	desc, err := store.Resolve(ctx, d.String())
	if err != nil {
		return fmt.Errorf("resolve: %w", err)
	}
	if desc.Size < 0 || desc.Size > maxConfigBytes {
		return fmt.Errorf("size %d is over the %d-byte limit", desc.Size, maxConfigBytes)
	}
	b, err := content.FetchAll(ctx, store, desc)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}
