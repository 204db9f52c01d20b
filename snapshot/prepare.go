package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Prepare creates an active snapshot. For an unpack Prepare (labels name a
// target chain ID) it first tries to serve the layer itself; see the package
// comment for the outcomes.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("key", key))
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", key, err)
		}
	}
	target, isUnpack := base.Labels[snapshots.LabelSnapshotRef]
	if isUnpack {
		if _, err := s.Stat(ctx, target); err == nil {
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
	}
	if err := s.checkParent(ctx, parent); err != nil {
		return nil, err
	}
	snap, err := s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
	if err != nil {
		return nil, err
	}
	if !isUnpack {
		return s.mounts(snap), nil
	}
	return s.prepareLayer(ctx, key, target, snap, base.Labels)
}

// View creates a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	if err := s.checkParent(ctx, parent); err != nil {
		return nil, err
	}
	snap, err := s.createSnapshot(ctx, snapshots.KindView, key, parent, opts)
	if err != nil {
		return nil, err
	}
	return s.mounts(snap), nil
}

// prepareLayer decides how the layer of an unpack Prepare is served and
// serves it. Mount runs outside any transaction (it may take seconds).
func (s *Snapshotter) prepareLayer(ctx context.Context, key, target string, snap storage.Snapshot, labels map[string]string) ([]mount.Mount, error) {
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("target", target))
	log.G(ctx).WithField("labels", labels).Debug("layer unpack")
	tm := &Timings{Start: time.Now()}
	d, decided := decideBeforeMount(s.lazyDisabled, s.minLayerSize, labels, s.unpacker != nil)
	if !decided {
		mountErr := s.mountLayer(ctx, s.upperPath(snap.ID), labels)
		tm.Mount = time.Since(tm.Start)
		d = decide(mountErr, s.unpacker != nil)
		if d.Reason == ReasonMounted && s.completionOff {
			d.Reason = ReasonMountedUnverified
		}
		if mountErr != nil {
			log.G(ctx).WithError(mountErr).Debugf("layer not mounted lazily: %s (%s)", d.Outcome, d.Reason)
		}
	}
	switch d.Outcome {
	case OutcomeLazy:
		return s.serveLazy(ctx, key, target, snap, d, tm)
	case OutcomeLocalUnpack:
		return s.serveLocalUnpack(ctx, key, target, snap, d, tm)
	default:
		return s.serveOverlay(ctx, key, snap, d)
	}
}

// mountLayer asks the FileSystem to mount, within the mount timeout.
func (s *Snapshotter) mountLayer(ctx context.Context, mp string, labels map[string]string) error {
	if s.mountTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.mountTimeout)
		defer cancel()
	}
	return s.fs.Mount(ctx, mp, labels)
}

// createSnapshot records a new snapshot and builds its directory under a
// new-* name, renamed into place before the transaction commits; on any
// error the directory is removed and the transaction rolled back.
func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (snap storage.Snapshot, err error) {
	var tmp, final string
	defer func() {
		if err == nil {
			return
		}
		for _, dir := range []string{tmp, final} {
			if dir == "" {
				continue
			}
			if rerr := os.RemoveAll(dir); rerr != nil {
				log.G(ctx).WithError(rerr).WithField("path", dir).Warn("cannot remove directory of failed snapshot")
			}
		}
	}()
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		if tmp, err = s.newSnapshotDir(kind); err != nil {
			return err
		}
		if snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return fmt.Errorf("create snapshot %s: %w", key, err)
		}
		if len(snap.ParentIDs) > 0 {
			if err := copyOwner(filepath.Join(tmp, "fs"), s.upperPath(snap.ParentIDs[0])); err != nil {
				return err
			}
		}
		final = filepath.Join(s.snapshotsDir(), snap.ID)
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("move snapshot directory into place: %w", err)
		}
		tmp = ""
		return nil
	})
	return snap, err
}

// newSnapshotDir makes snapshots/new-*/fs (and work, for active snapshots).
func (s *Snapshotter) newSnapshotDir(kind snapshots.Kind) (string, error) {
	tmp, err := os.MkdirTemp(s.snapshotsDir(), "new-")
	if err != nil {
		return "", fmt.Errorf("create snapshot directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(tmp, "fs"), 0o755); err != nil {
		return tmp, fmt.Errorf("create snapshot directory: %w", err)
	}
	if kind == snapshots.KindActive {
		if err := os.Mkdir(filepath.Join(tmp, "work"), 0o711); err != nil {
			return tmp, fmt.Errorf("create snapshot work directory: %w", err)
		}
	}
	return tmp, nil
}

// copyOwner gives dir the owner of the parent's root, so that the root of
// the merged tree keeps the owner the image gave it.
func copyOwner(dir, parent string) error {
	uid, gid, err := ownerOf(parent)
	if err != nil {
		return fmt.Errorf("stat parent snapshot: %w", err)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown snapshot directory: %w", err)
	}
	return nil
}

func ownerOf(path string) (uid, gid int, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("stat %s: no owner information", path)
	}
	return int(sys.Uid), int(sys.Gid), nil
}
