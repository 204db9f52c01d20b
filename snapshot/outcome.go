package snapshot

import (
	"context"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// serveLazy commits the FUSE-mounted active snapshot under the target and
// answers ErrAlreadyExists, which tells containerd the layer is in place.
func (s *Snapshotter) serveLazy(ctx context.Context, key, target string, snap storage.Snapshot, d Decision, tm *Timings) ([]mount.Mount, error) {
	labels := s.layerLabels(ctx, key, d)
	labels[LabelRemote] = LabelRemoteValue
	if ns, ok := namespaces.Namespace(ctx); ok {
		labels[LabelNamespace] = ns
	}
	tm.finish(labels)
	if err := s.commitLayer(ctx, key, target, snapshots.Usage{}, labels); err != nil {
		s.discardActive(ctx, key, snap.ID, true)
		return nil, err
	}
	s.metrics.record(d)
	log.G(ctx).Infof("layer mounted lazily")
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// serveLocalUnpack has the LayerUnpacker fill the snapshot directory, then
// commits it under the target like serveLazy. If unpacking fails, the
// directory is emptied and containerd gets the layer the overlay way.
func (s *Snapshotter) serveLocalUnpack(ctx context.Context, key, target string, snap storage.Snapshot, d Decision, tm *Timings) ([]mount.Mount, error) {
	dir := s.upperPath(snap.ID)
	unpackStart := time.Now()
	err := s.unpacker.Unpack(ctx, dir, s.layerLabels(ctx, key, d))
	tm.Unpack = time.Since(unpackStart)
	if err != nil {
		log.G(ctx).WithError(err).Warn("local unpack failed; containerd will pull the layer")
		if err := emptyDir(dir); err != nil {
			s.discardActive(ctx, key, snap.ID, false)
			return nil, fmt.Errorf("clear partly unpacked layer: %w", err)
		}
		return s.serveOverlay(ctx, key, snap, Decision{OutcomeOverlay, ReasonUnpackFailed})
	}
	du, err := fs.DiskUsage(ctx, dir)
	if err != nil {
		s.discardActive(ctx, key, snap.ID, false)
		return nil, fmt.Errorf("disk usage of unpacked layer: %w", err)
	}
	labels := s.layerLabels(ctx, key, d)
	tm.finish(labels)
	if err := s.commitLayer(ctx, key, target, snapshots.Usage(du), labels); err != nil {
		s.discardActive(ctx, key, snap.ID, false)
		return nil, err
	}
	s.metrics.record(d)
	log.G(ctx).Infof("layer unpacked locally (%s)", d.Reason)
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// serveOverlay records the decision on the active snapshot and returns its
// ordinary mounts; containerd then applies the layer and calls Commit, which
// carries the decision labels over to the committed snapshot.
func (s *Snapshotter) serveOverlay(ctx context.Context, key string, snap storage.Snapshot, d Decision) ([]mount.Mount, error) {
	info := snapshots.Info{Name: key, Labels: map[string]string{
		LabelDecision:       string(d.Outcome),
		LabelDecisionReason: string(d.Reason),
	}}
	if _, err := s.Update(ctx, info, "labels."+LabelDecision, "labels."+LabelDecisionReason); err != nil {
		s.discardActive(ctx, key, snap.ID, false)
		return nil, fmt.Errorf("record decision on snapshot %s: %w", key, err)
	}
	s.metrics.record(d)
	log.G(ctx).Debugf("layer left to containerd (%s)", d.Reason)
	return s.mounts(snap), nil
}

// layerLabels returns the labels of the active snapshot key plus the
// decision labels: what the committed layer will carry, and what a restored
// mount is given again.
func (s *Snapshotter) layerLabels(ctx context.Context, key string, d Decision) map[string]string {
	labels := map[string]string{}
	if info, err := s.Stat(ctx, key); err == nil {
		maps.Copy(labels, info.Labels)
	}
	labels[LabelDecision] = string(d.Outcome)
	labels[LabelDecisionReason] = string(d.Reason)
	return labels
}

// commitLayer turns the active snapshot key into the committed target.
func (s *Snapshotter) commitLayer(ctx context.Context, key, target string, usage snapshots.Usage, labels map[string]string) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		if _, err := storage.CommitActive(ctx, key, target, usage, snapshots.WithLabels(labels)); err != nil {
			return fmt.Errorf("commit layer %s as %s: %w", key, target, err)
		}
		return nil
	})
}

// discardActive undoes a Prepare that cannot be completed: it unmounts the
// layer if mounted, forgets the snapshot and removes its directory. Errors
// are logged only: the caller is already returning the error that matters.
func (s *Snapshotter) discardActive(ctx context.Context, key, id string, mounted bool) {
	if mounted {
		if err := s.unmount(ctx, s.upperPath(id)); err != nil {
			// Leave the directory for Cleanup: removing a live mount
			// would walk into it.
			log.G(ctx).WithError(err).Warn("cannot unmount discarded layer")
		}
	}
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, _, err := storage.Remove(ctx, key)
		return err
	}); err != nil {
		log.G(ctx).WithError(err).Warn("cannot forget discarded snapshot")
		return
	}
	s.removeDir(ctx, s.dir(id))
}

// emptyDir removes everything inside dir, keeping dir itself (its owner
// and mode were set for the snapshot).
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(dir + "/" + e.Name()); err != nil {
			return err
		}
	}
	return nil
}
