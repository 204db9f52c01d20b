package snapshot

import (
	"errors"
	"strconv"

	"github.com/ociseek/ociseek/index"
)

// Outcome names how one layer's unpack Prepare was served. Exactly one
// outcome is recorded per layer, as a snapshot label and in the metrics.
type Outcome string

const (
	// OutcomeLazy: the FileSystem mounted the layer (FUSE); its bytes are
	// fetched on demand. The snapshot is committed by the snapshotter.
	OutcomeLazy Outcome = "lazy"
	// OutcomeLocalUnpack: the image is indexed but this layer is not (too
	// small or unindexable), so the daemon fetched, verified and unpacked
	// the layer itself. The snapshot is committed by the snapshotter.
	OutcomeLocalUnpack Outcome = "local-unpack"
	// OutcomeOverlay: plain overlay directories are returned and
	// containerd pulls and applies the layer as it would without ociseek.
	OutcomeOverlay Outcome = "overlay"
)

// Reason says why an Outcome was chosen. Reasons are a small fixed set so
// that they can be metric label values (no digests, no free text).
type Reason string

const (
	// ReasonMounted: the FileSystem mounted the layer.
	ReasonMounted Reason = "mounted"
	// ReasonLazyDisabled: lazy loading is turned off by configuration.
	ReasonLazyDisabled Reason = "lazy-disabled"
	// ReasonNoIndex: the image has no SOCI index (index.ErrNoIndex).
	ReasonNoIndex Reason = "no-index"
	// ReasonNoZtoc: the image's index has no zTOC for this layer
	// (index.ErrNoZtoc).
	ReasonNoZtoc Reason = "no-ztoc"
	// ReasonV1NotTrusted: the image has no v2 index, and v1 indices are
	// not trusted for its repository (index.ErrIndexNotTrusted).
	ReasonV1NotTrusted Reason = "v1-index-not-trusted"
	// ReasonZtocTooLarge: the layer's zTOC is over a configured bound on
	// its size, entries or spans (index.ErrZtocTooLarge).
	ReasonZtocTooLarge Reason = "ztoc-too-large"
	// ReasonZtocBudget: the layer's zTOC would take the zTOCs of mounted
	// layers over their memory budget (index.ErrZtocBudget).
	ReasonZtocBudget Reason = "ztoc-memory-budget"
	// ReasonZtocRejected: the layer's zTOC failed verification before on
	// this node (index.ErrZtocRejected), so it is not trusted again.
	ReasonZtocRejected Reason = "ztoc-rejected"
	// ReasonMountedUnverified: mounted lazily, but background completion
	// is off (WithCompletionOff), so the layer as a whole is never
	// verified: its checkpoints and TOC are trusted as the index says.
	ReasonMountedUnverified Reason = "mounted-unverified"
	// ReasonBelowMinSize: the layer is smaller than the configured minimum
	// (WithMinLayerSize), so it is not worth a FUSE mount; the
	// FileSystem is not asked.
	ReasonBelowMinSize Reason = "below-min-size"
	// ReasonMountFailed: the FileSystem failed for another reason.
	ReasonMountFailed Reason = "mount-failed"
	// ReasonNoUnpacker: local unpacking was wanted but no LayerUnpacker is
	// configured.
	ReasonNoUnpacker Reason = "no-unpacker"
	// ReasonUnauthorized: the registry refused the daemon's discovery
	// request (no credentials, or ones it does not accept); containerd
	// pulls the layer with its own.
	ReasonUnauthorized Reason = "unauthorized"
	// ReasonUnpackFailed: local unpacking was tried and failed; containerd
	// gets a second chance through the overlay path.
	ReasonUnpackFailed Reason = "unpack-failed"
)

// Decision is an Outcome with its Reason.
type Decision struct {
	Outcome Outcome
	Reason  Reason
}

// decide maps the result of FileSystem.Mount to a Decision. It is the one
// place that turns errors into outcomes; each outcome is then carried out by
// its own method (serveLazy, serveLocalUnpack, serveOverlay).
//
//   - nil → lazy;
//   - index.ErrUnauthorized → overlay: the daemon may not read the
//     registry, so it could not unpack the layer either; containerd pulls
//     with its own credentials;
//   - index.ErrIndexNotTrusted → overlay, like an unindexed image (it is
//     tested first: those errors wrap index.ErrNoIndex too);
//   - index.ErrNoIndex → overlay: the whole image is unindexed, so containerd
//     pulls it as usual and no daemon bandwidth is spent;
//   - index.ErrNoZtoc → local unpack: the image is indexed, only this layer is
//     not, and the daemon can unpack it without containerd's help;
//   - index.ErrZtocTooLarge, index.ErrZtocBudget → local unpack: the layer
//     is indexed, but holding its zTOC would cost too much memory;
//   - index.ErrZtocRejected → local unpack: the layer's zTOC was proven
//     not to match it before, so the index is not trusted for it;
//   - anything else → local unpack too, because a layer that cannot be
//     mounted may still be fetched whole; serveLocalUnpack falls back to
//     overlay if that fails as well.
//
// Without an unpacker, the local-unpack outcomes become overlay.
func decide(mountErr error, haveUnpacker bool) Decision {
	switch {
	case mountErr == nil:
		return Decision{OutcomeLazy, ReasonMounted}
	case errors.Is(mountErr, index.ErrUnauthorized):
		return Decision{OutcomeOverlay, ReasonUnauthorized}
	case errors.Is(mountErr, index.ErrIndexNotTrusted):
		return Decision{OutcomeOverlay, ReasonV1NotTrusted}
	case errors.Is(mountErr, index.ErrNoIndex):
		return Decision{OutcomeOverlay, ReasonNoIndex}
	case errors.Is(mountErr, index.ErrNoZtoc):
		return localUnpack(ReasonNoZtoc, haveUnpacker)
	case errors.Is(mountErr, index.ErrZtocTooLarge):
		return localUnpack(ReasonZtocTooLarge, haveUnpacker)
	case errors.Is(mountErr, index.ErrZtocBudget):
		return localUnpack(ReasonZtocBudget, haveUnpacker)
	case errors.Is(mountErr, index.ErrZtocRejected):
		return localUnpack(ReasonZtocRejected, haveUnpacker)
	default:
		return localUnpack(ReasonMountFailed, haveUnpacker)
	}
}

// decideBeforeMount returns the Decision that makes a mount attempt
// pointless, if any: lazy loading turned off, or a layer whose size label
// says it is below minSize (0: no minimum). A size label that is absent
// (CRI sends none) or not a decimal number leaves the choice to the mount.
func decideBeforeMount(lazyDisabled bool, minSize int64, labels map[string]string, haveUnpacker bool) (Decision, bool) {
	if lazyDisabled {
		return Decision{OutcomeOverlay, ReasonLazyDisabled}, true
	}
	if minSize <= 0 {
		return Decision{}, false
	}
	size, err := strconv.ParseInt(labels[LabelLayerSize], 10, 64)
	if err != nil || size < 0 || size >= minSize {
		return Decision{}, false
	}
	return localUnpack(ReasonBelowMinSize, haveUnpacker), true
}

// localUnpack is the local-unpack outcome for reason, or overlay when no
// unpacker is configured.
func localUnpack(reason Reason, haveUnpacker bool) Decision {
	if !haveUnpacker {
		return Decision{OutcomeOverlay, ReasonNoUnpacker}
	}
	return Decision{OutcomeLocalUnpack, reason}
}
