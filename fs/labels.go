package fs

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/ociseek/ociseek/internal/label"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// Snapshot labels Mount reads. The keys are declared by containerd
// (pkg/snapshotters: its image handler sets the cri.* ones for CRI,
// nerdctl and ctr) and by package label (the SOCI ones, from nerdctl's
// SOCI handler); these names only say which of them fs reads.
const (
	// LabelImageRef is the image reference, "host/repo:tag" or
	// "host/repo@digest". Required.
	LabelImageRef = snapshotters.TargetRefLabel
	// LabelManifestDigest is the digest of the platform-specific image
	// manifest. Required.
	LabelManifestDigest = snapshotters.TargetManifestDigestLabel
	// LabelLayerDigest is the digest of the (compressed) layer blob.
	// Required.
	LabelLayerDigest = snapshotters.TargetLayerDigestLabel
	// LabelLayerSize is the layer blob's size in bytes, decimal. Optional:
	// CRI does not send it; the zTOC's archive size is used then.
	LabelLayerSize = label.LayerSize
	// LabelIndexDigest names the SOCI index to use instead of discovering
	// one. Optional; nerdctl sends it empty when no index was asked for.
	LabelIndexDigest = label.IndexDigest
)

// ErrNoLabels reports an unpack whose labels name no image at all: none of
// LabelImageRef, LabelManifestDigest and LabelLayerDigest is set. That is
// containerd running without snapshot annotations (CRI's
// disable_snapshot_annotations, or the transfer service without
// enable_remote_snapshot_annotations), not a malformed request; callers
// usually let containerd pull such a layer.
var ErrNoLabels = errors.New("no image labels")

// LayerRef names one layer of one image: everything needed to find its
// zTOC and to read its blob.
type LayerRef struct {
	// ImageRef is the image reference, "host/repo:tag" or "host/repo@digest".
	ImageRef string
	// ManifestDigest is the platform-specific image manifest's digest.
	ManifestDigest digest.Digest
	// LayerDigest is the layer blob's digest.
	LayerDigest digest.Digest
	// IndexDigest, when not empty, is the SOCI index to use.
	IndexDigest digest.Digest
	// Size is the layer blob's size in bytes; 0 means unknown.
	Size int64
}

// LayerRefFromLabels reads the LayerRef of an unpack Prepare's labels.
// A missing or malformed label gives an error wrapping
// errdefs.ErrInvalidArgument that names the label; when all three required
// labels are missing the error wraps ErrNoLabels too.
func LayerRefFromLabels(labels map[string]string) (LayerRef, error) {
	var l LayerRef
	if labels[LabelImageRef] == "" && labels[LabelManifestDigest] == "" && labels[LabelLayerDigest] == "" {
		return l, fmt.Errorf("labels %s, %s and %s missing (containerd must run with snapshot annotations enabled): %w: %w",
			LabelImageRef, LabelManifestDigest, LabelLayerDigest, ErrNoLabels, errdefs.ErrInvalidArgument)
	}
	ref, err := requiredLabel(labels, LabelImageRef)
	if err != nil {
		return l, err
	}
	if _, err := registry.ParseReference(ref); err != nil {
		return l, fmt.Errorf("label %s=%q: %v: %w", LabelImageRef, ref, err, errdefs.ErrInvalidArgument)
	}
	l.ImageRef = ref
	if l.ManifestDigest, err = digestLabel(labels, LabelManifestDigest, true); err != nil {
		return l, err
	}
	if l.LayerDigest, err = digestLabel(labels, LabelLayerDigest, true); err != nil {
		return l, err
	}
	if l.IndexDigest, err = digestLabel(labels, LabelIndexDigest, false); err != nil {
		return l, err
	}
	if s := labels[LabelLayerSize]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return l, fmt.Errorf("label %s=%q: not a positive decimal size: %w", LabelLayerSize, s, errdefs.ErrInvalidArgument)
		}
		l.Size = n
	}
	return l, nil
}

// Labels returns the labels LayerRefFromLabels reads back as l.
func (l LayerRef) Labels() map[string]string {
	m := map[string]string{
		LabelImageRef:       l.ImageRef,
		LabelManifestDigest: l.ManifestDigest.String(),
		LabelLayerDigest:    l.LayerDigest.String(),
	}
	if l.IndexDigest != "" {
		m[LabelIndexDigest] = l.IndexDigest.String()
	}
	if l.Size > 0 {
		m[LabelLayerSize] = strconv.FormatInt(l.Size, 10)
	}
	return m
}

// Repository returns the "host/repo" part of ImageRef, where the layer blob
// lives.
func (l LayerRef) Repository() (string, error) {
	r, err := registry.ParseReference(l.ImageRef)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", l.ImageRef, err)
	}
	return r.Registry + "/" + r.Repository, nil
}

func requiredLabel(labels map[string]string, key string) (string, error) {
	v := labels[key]
	if v == "" {
		return "", fmt.Errorf("label %s missing (containerd must run with snapshot annotations enabled): %w",
			key, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// digestLabel parses the digest in label key; an absent or empty optional
// label gives "".
func digestLabel(labels map[string]string, key string, required bool) (digest.Digest, error) {
	v := labels[key]
	if v == "" {
		if !required {
			return "", nil
		}
		_, err := requiredLabel(labels, key)
		return "", err
	}
	d, err := digest.Parse(v)
	if err != nil {
		return "", fmt.Errorf("label %s=%q: %v: %w", key, v, err, errdefs.ErrInvalidArgument)
	}
	return d, nil
}
