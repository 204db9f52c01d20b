// Package unpack is the snapshotter's local unpack: it fetches one whole
// layer blob from its registry, checks its digest and its diffID (the
// digest of the uncompressed tar, from containerd's label or the image
// config), and only then puts the unpacked files in the snapshot directory.
//
// It implements snapshot.LayerUnpacker; cmd/ociseek-snapshotter builds it
// and hands it to snapshot.WithUnpacker. It imports no other package of
// this module: the registry client and the plain-HTTP policy come in as
// values.
package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// stagingSuffix names the directory a layer is unpacked into, beside the
// target directory (so on the same file system, for the final rename).
const stagingSuffix = ".unpacking"

// Unpacker fetches a layer blob from its registry and unpacks it into a
// snapshot directory, verifying the compressed digest and the diffID (the
// uncompressed digest from the image config, which containerd's unpacker
// passes as snapshots.LabelSnapshotDiffID since 2.0, and which is read
// from the image config otherwise: see diffIDFromConfig).
type Unpacker struct {
	client    orasremote.Client
	plainHTTP func(host string) bool
}

// New returns an Unpacker that reaches registries through client, over
// plain HTTP for the hosts plainHTTP accepts (nil: none).
func New(client orasremote.Client, plainHTTP func(host string) bool) *Unpacker {
	if plainHTTP == nil {
		plainHTTP = func(string) bool { return false }
	}
	return &Unpacker{client: client, plainHTTP: plainHTTP}
}

// Unpack implements snapshot.LayerUnpacker. The layer is unpacked into a
// staging directory beside dir and renamed onto dir (which must be empty)
// only once both digests match, so that a refused layer changes nothing in
// dir: not its files, nor the xattrs of dir itself (an opaque marker at the
// tar's root sets trusted.overlay.opaque on the directory, which would hide
// every lower layer). A staging directory left by an interrupted attempt
// is removed first.
func (u *Unpacker) Unpack(ctx context.Context, dir string, labels map[string]string) error {
	ref, layer, diffID, manifest, err := layerOf(labels)
	if err != nil {
		return err
	}
	repo, err := orasremote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", layer, err)
	}
	repo.Client = u.client
	repo.PlainHTTP = u.plainHTTP(ref.Registry)
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
	staging, err := newStaging(dir)
	if err != nil {
		return fmt.Errorf("unpack layer %s: %w", layer, err)
	}
	if err := fill(ctx, staging, dir, content.NewVerifyReader(rc, desc), diffID); err != nil {
		// Best effort: the next attempt removes what is left anyway.
		_ = os.RemoveAll(staging)
		return fmt.Errorf("unpack layer %s: %w", layer, err)
	}
	return nil
}

// fill unpacks blob into staging and, once blob matches its descriptor and
// the tar its diffID, renames staging onto dir.
func fill(ctx context.Context, staging, dir string, blob *content.VerifyReader, diffID digest.Digest) error {
	if err := applyLayer(ctx, staging, blob, diffID); err != nil {
		return err
	}
	if err := blob.Verify(); err != nil {
		return fmt.Errorf("blob does not match its digest: %w", err)
	}
	// rename(2) replaces an empty directory in one step (os.Rename
	// refuses any existing directory); a non-empty dir fails here rather
	// than mixing two layers.
	if err := unix.Rename(staging, dir); err != nil {
		return fmt.Errorf("move unpacked layer %s into place at %s: %w", staging, dir, err)
	}
	return nil
}

// newStaging creates the staging directory of dir, empty and with dir's
// permissions (the tar may still set them, as it would on dir), after
// removing one an interrupted attempt left.
func newStaging(dir string) (string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("snapshot directory: %w", err)
	}
	staging := filepath.Clean(dir) + stagingSuffix
	if err := os.RemoveAll(staging); err != nil {
		return "", fmt.Errorf("remove staging directory left by an earlier attempt: %w", err)
	}
	if err := os.Mkdir(staging, st.Mode().Perm()); err != nil {
		return "", fmt.Errorf("create staging directory: %w", err)
	}
	// Mkdir's mode passes through the umask; dir's must come out exact.
	if err := os.Chmod(staging, st.Mode().Perm()); err != nil {
		return "", fmt.Errorf("create staging directory: %w", err)
	}
	return staging, nil
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
	ref, err = registry.ParseReference(labels[snapshotters.TargetRefLabel])
	if err != nil {
		errs = append(errs, fmt.Errorf("label %s: %w", snapshotters.TargetRefLabel, err))
	}
	layer, err = digest.Parse(labels[snapshotters.TargetLayerDigestLabel])
	if err != nil {
		errs = append(errs, fmt.Errorf("label %s: %w", snapshotters.TargetLayerDigestLabel, err))
	}
	if v, ok := labels[snapshots.LabelSnapshotDiffID]; ok || labels[snapshotters.TargetManifestDigestLabel] == "" {
		if diffID, err = digest.Parse(v); err != nil {
			errs = append(errs, fmt.Errorf("label %s: %w", snapshots.LabelSnapshotDiffID, err))
		}
	} else if manifest, err = digest.Parse(labels[snapshotters.TargetManifestDigestLabel]); err != nil {
		errs = append(errs, fmt.Errorf("label %s (read for want of %s): %w", snapshotters.TargetManifestDigestLabel, snapshots.LabelSnapshotDiffID, err))
	}
	if err := errors.Join(errs...); err != nil {
		return registry.Reference{}, "", "", "", fmt.Errorf("layer to unpack: %w", err)
	}
	return ref, layer, diffID, manifest, nil
}
