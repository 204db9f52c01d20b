package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/ociseek/ociseek/index/discover"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Labels containerd puts on an unpack Prepare (through its image handler
// wrappers) that say which layer of which image is being unpacked.
const (
	labelImageRef    = "containerd.io/snapshot/cri.image-ref"
	labelLayerDigest = "containerd.io/snapshot/cri.layer-digest"
)

// layerUnpacker is the snapshot.LayerUnpacker of the daemon: it fetches a
// layer blob from its registry and unpacks it in the snapshot directory,
// verifying the compressed digest and the diffID (the uncompressed digest
// from the image config, which containerd's unpacker passes as
// snapshots.LabelSnapshotDiffID since 2.0, and which is read from the image
// config otherwise: see diffIDFromConfig).
type layerUnpacker struct {
	client    *auth.Client
	plainHTTP map[string]bool
}

// Unpack implements snapshot.LayerUnpacker.
func (u *layerUnpacker) Unpack(ctx context.Context, dir string, labels map[string]string) error {
	ref, layer, diffID, manifest, err := layerOf(labels)
	if err != nil {
		return err
	}
	repo, err := orasremote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", layer, err)
	}
	repo.Client = u.client
	repo.PlainHTTP = u.isPlainHTTP(ref.Registry)
	if diffID == "" {
		if diffID, err = diffIDFromConfig(ctx, repo, manifest, layer); err != nil {
			return fmt.Errorf("unpack layer %s: no %s label, and the image config gives no diffID: %w",
				layer, snapshots.LabelSnapshotDiffID, err)
		}
	}
	desc, err := repo.Blobs().Resolve(ctx, layer.String())
	if err != nil {
		return fmt.Errorf("resolve layer %s in %s: %w", layer, ref.Repository, err)
	}
	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return fmt.Errorf("fetch layer %s: %w", layer, err)
	}
	defer rc.Close()
	blob := content.NewVerifyReader(rc, desc)
	if err := applyLayer(ctx, dir, blob, diffID); err != nil {
		return fmt.Errorf("unpack layer %s: %w", layer, err)
	}
	if err := blob.Verify(); err != nil {
		return fmt.Errorf("layer %s does not match its digest: %w", layer, err)
	}
	return nil
}

// applyLayer decompresses r (gzip, zstd or plain tar) into dir, with
// whiteouts converted to overlay's form since dir is an overlay layer, and
// checks that the tar stream hashes to diffID.
func applyLayer(ctx context.Context, dir string, r io.Reader, diffID digest.Digest) error {
	ds, err := compression.DecompressStream(r)
	if err != nil {
		return fmt.Errorf("open compressed stream: %w", err)
	}
	defer ds.Close()
	digester := diffID.Algorithm().Digester()
	tee := io.TeeReader(ds, digester.Hash())
	if _, err := archive.Apply(ctx, dir, tee, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout)); err != nil {
		return fmt.Errorf("apply tar: %w", err)
	}
	// Apply stops at the tar end marker; the diffID covers the padding.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("read tar trailer: %w", err)
	}
	if got := digester.Digest(); got != diffID {
		return fmt.Errorf("uncompressed digest %s, image config says %s", got, diffID)
	}
	return nil
}

// layerOf reads and checks the labels that name the layer. The diffID is
// "" when containerd did not send it (clients before 2.0) but named the
// manifest, whose config gives it.
func layerOf(labels map[string]string) (ref registry.Reference, layer, diffID, manifest digest.Digest, err error) {
	var errs []error
	ref, err = registry.ParseReference(labels[labelImageRef])
	if err != nil {
		errs = append(errs, fmt.Errorf("label %s: %w", labelImageRef, err))
	}
	layer, err = digest.Parse(labels[labelLayerDigest])
	if err != nil {
		errs = append(errs, fmt.Errorf("label %s: %w", labelLayerDigest, err))
	}
	if v, ok := labels[snapshots.LabelSnapshotDiffID]; ok || labels[labelManifestDigest] == "" {
		if diffID, err = digest.Parse(v); err != nil {
			errs = append(errs, fmt.Errorf("label %s: %w", snapshots.LabelSnapshotDiffID, err))
		}
	} else if manifest, err = digest.Parse(labels[labelManifestDigest]); err != nil {
		errs = append(errs, fmt.Errorf("label %s (read for want of %s): %w", labelManifestDigest, snapshots.LabelSnapshotDiffID, err))
	}
	if err := errors.Join(errs...); err != nil {
		return registry.Reference{}, "", "", "", fmt.Errorf("layer to unpack: %w", err)
	}
	return ref, layer, diffID, manifest, nil
}

// isPlainHTTP says whether host (host[:port]) is reached over HTTP:
// configured hosts and loopback addresses.
func (u *layerUnpacker) isPlainHTTP(host string) bool {
	return u.plainHTTP[host] || discover.DefaultPlainHTTP(host)
}
