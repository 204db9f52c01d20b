package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"

	ociseekfs "github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/snapshot"
)

const explainDescription = `
Tells, for each layer of the image REF (already pulled into containerd), how
the ociseek snapshotter serves it and why, from the labels the snapshotter
recorded on the layer's snapshot:

  lazy          mounted over FUSE; file bytes are fetched from the registry
                when read
  local-unpack  the image is indexed but this layer has no zTOC (typically
                a small layer), so the daemon downloaded and unpacked it
  overlay       not served lazily (for instance, the image has no SOCI
                index); containerd downloaded and unpacked it

Columns: layer number (bottom first), layer digest, compressed size, path,
reason code, and the reason in words.

With --timings, a second table follows: for each layer the daemon served
itself (lazy or local-unpack), when its unpack began (seconds after the
first such layer's), how long the lazy mount took (index discovery, zTOC
fetch and parse, blob probe, FUSE mount), how long the local unpack took,
and the total until the layer was in place.`

func explainCommand() command {
	return command{
		name:    "explain",
		summary: "tell for each layer of a pulled image whether it is lazy, and why",
		run:     runExplain,
	}
}

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("explain", "[flags] REF", explainDescription, stderr)
	cf := addContainerdFlags(fs)
	root := fs.String("root", "/var/lib/ociseek", "the snapshotter daemon's state `directory` ([daemon] root), where failed verifications are recorded")
	timings := fs.Bool("timings", false, "also print when each layer was prepared and how long its steps took")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	client, ctx, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	img, err := client.GetImage(ctx, pos[0])
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("image %s is not in containerd namespace %s (pull it with 'ociseek pull'): %w", pos[0], cf.namespace, err)
		}
		return fmt.Errorf("image %s: %w", pos[0], err)
	}
	rejected, err := ociseekfs.ReadRejections(*root)
	if err != nil {
		return err
	}
	return explainImageTimings(ctx, client, img, cf.snapshotter, rejected, *timings, stdout)
}

// explainImage prints one line per layer of img with the decision the
// snapshotter recorded on the layer's committed snapshot.
func explainImage(ctx context.Context, client *containerd.Client, img containerd.Image, snapshotter string, rejected []ociseekfs.Rejection, w io.Writer) error {
	return explainImageTimings(ctx, client, img, snapshotter, rejected, false, w)
}

// explainImageTimings is explainImage, followed by the daemon's timings of
// each layer when timings is set (explain --timings).
func explainImageTimings(ctx context.Context, client *containerd.Client, img containerd.Image, snapshotter string, rejected []ociseekfs.Rejection, timings bool, w io.Writer) error {
	manifest, err := images.Manifest(ctx, client.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", img.Name(), err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return fmt.Errorf("config of %s: %w", img.Name(), err)
	}
	if len(diffIDs) != len(manifest.Layers) {
		return fmt.Errorf("image %s: %d layers in the manifest but %d in the config", img.Name(), len(manifest.Layers), len(diffIDs))
	}
	chainIDs := identity.ChainIDs(diffIDs)
	sn := client.SnapshotService(snapshotter)
	rows := make([]explainRow, len(manifest.Layers))
	for i, layer := range manifest.Layers {
		rows[i] = explainRow{Digest: layer.Digest.String(), Size: layer.Size, Path: "not-unpacked"}
		info, err := sn.Stat(ctx, chainIDs[i].String())
		switch {
		case errdefs.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("snapshot of layer %d (%s): %w", i+1, layer.Digest, err)
		default:
			rows[i].Path, rows[i].Reason = info.Labels[snapshot.LabelDecision], info.Labels[snapshot.LabelDecisionReason]
			rows[i].Timings = info.Labels[snapshot.LabelTimings]
			if rows[i].Path == "" {
				rows[i].Path = "unknown"
			}
		}
		markRejected(&rows[i], rejected)
	}
	if err := writeExplainTable(w, rows); err != nil {
		return err
	}
	if timings {
		return writeTimingsTable(w, rows)
	}
	return nil
}

// markRejected replaces a lazy layer's reason by the verification failure
// recorded for it, if any: the decision label was written at mount time,
// before the failure, and no longer tells what a container sees (EIO).
func markRejected(row *explainRow, rejected []ociseekfs.Rejection) {
	if row.Path != string(snapshot.OutcomeLazy) {
		return
	}
	for _, r := range rejected {
		if r.Layer.String() == row.Digest {
			row.Reason, row.Failure = reasonVerificationFailed, r.Reason
			return
		}
	}
}

// reasonVerificationFailed is explain's own reason for a lazy layer whose
// zTOC failed verification while mounted.
const reasonVerificationFailed = "verification-failed"

// explainRow is one layer's line of the explain table.
type explainRow struct {
	// Digest is the layer blob's digest.
	Digest string
	// Size is the compressed size in bytes.
	Size int64
	// Path is the snapshotter's decision label, or "not-unpacked" (no
	// snapshot) or "unknown" (a snapshot without the label).
	Path string
	// Reason is the decision reason label, "" when absent.
	Reason string
	// Failure is the recorded verification failure of a lazy layer.
	Failure string
	// Timings is the daemon's timings label, "" when absent.
	Timings string
}

// writeExplainTable prints rows (bottom layer first) as an aligned table
// whose columns never contain spaces except the last, so scripts can split
// them: LAYER DIGEST SIZE (two fields: number and unit) PATH REASON WHY.
func writeExplainTable(w io.Writer, rows []explainRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tDIGEST\tSIZE\tPATH\tREASON\tWHY")
	for i, r := range rows {
		words := why(r.Path, r.Reason)
		if r.Failure != "" {
			words = "failed verification, reads fail with EIO and the next mount unpacks it locally: " + r.Failure
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, r.Digest, humanSize(r.Size), r.Path, orDash(r.Reason), words)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write explanation: %w", err)
	}
	return nil
}

// why puts a decision into words for the user.
func why(path, reason string) string {
	switch snapshot.Reason(reason) {
	case snapshot.ReasonMounted:
		return "indexed: files are fetched from the registry when read; the layer is verified in the background"
	case snapshot.ReasonMountedUnverified:
		return "indexed: files are fetched when read, but background completion is off, so the layer is never verified as a whole ([background_fetch] enable)"
	case snapshot.ReasonZtocRejected:
		return "the layer's zTOC failed verification on this node before: not trusted again, unpacked by the daemon"
	case snapshot.ReasonLazyDisabled:
		return "lazy loading is turned off in the daemon's configuration"
	case snapshot.ReasonNoIndex:
		return "the image has no SOCI index"
	case snapshot.ReasonNoZtoc:
		if path == string(snapshot.OutcomeLocalUnpack) {
			return "the index has no zTOC for this layer (too small?): unpacked by the daemon"
		}
		return "the index has no zTOC for this layer (too small?)"
	case snapshot.ReasonV1NotTrusted:
		return "no SOCI v2 index, and v1 indices are not trusted for this repository ([discovery] v1_trusted_repositories): pulled by containerd"
	case snapshot.ReasonZtocTooLarge, snapshot.ReasonZtocBudget:
		what := "the layer's zTOC is over the daemon's bounds ([discovery] max_ztoc_*)"
		if reason == string(snapshot.ReasonZtocBudget) {
			what = "the zTOCs of mounted layers already fill their memory budget ([discovery] ztoc_memory_budget)"
		}
		if path == string(snapshot.OutcomeLocalUnpack) {
			return what + ": unpacked by the daemon"
		}
		return what
	case snapshot.ReasonBelowMinSize:
		if path == string(snapshot.OutcomeLocalUnpack) {
			return "smaller than the daemon's minimum layer size for lazy loading: unpacked by the daemon"
		}
		return "smaller than the daemon's minimum layer size for lazy loading"
	case snapshot.ReasonMountFailed:
		return "the lazy mount failed (see the daemon log)"
	case snapshot.ReasonNoUnpacker:
		return "no zTOC and local unpacking is off: pulled by containerd"
	case snapshot.ReasonUnpackFailed:
		return "local unpacking failed: pulled by containerd"
	case snapshot.ReasonUnauthorized:
		return "the registry refused the daemon (no credentials, or wrong ones): pulled by containerd. Give the daemon credentials: [cri_keychain] on a Kubernetes node, or a Docker config ([registry] docker_config)"
	}
	switch path {
	case "not-unpacked":
		return "no snapshot on this snapshotter (pulled with another one?)"
	case "unknown":
		return "the snapshot has no ociseek decision labels"
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanSize formats n bytes with a binary unit.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
