package snapshot

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Commit turns the active snapshot key into the committed snapshot name.
// The decision labels of a layer served the overlay way are carried over,
// because committing replaces a snapshot's labels with the caller's.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return fmt.Errorf("commit %s: %w", key, err)
		}
		du, err := fs.DiskUsage(ctx, s.upperPath(id))
		if err != nil {
			return fmt.Errorf("disk usage of snapshot %s: %w", key, err)
		}
		carried := map[string]string{}
		for _, k := range []string{LabelDecision, LabelDecisionReason} {
			if v, ok := info.Labels[k]; ok {
				carried[k] = v
			}
		}
		if len(carried) > 0 {
			opts = append([]snapshots.Opt{snapshots.WithLabels(carried)}, opts...)
		}
		if _, err := storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...); err != nil {
			return fmt.Errorf("commit %s as %s: %w", key, name, err)
		}
		return nil
	})
}

// Remove forgets a snapshot. Unless AsynchronousRemove is set, its
// directory (and any other directory no longer referenced) is deleted once
// the metadata change is committed; lazy layers are unmounted first.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var removals []string
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		if _, _, err := storage.Remove(ctx, key); err != nil {
			return fmt.Errorf("remove snapshot %s: %w", key, err)
		}
		if s.asyncRemove {
			return nil
		}
		var err error
		removals, err = s.unreferencedDirs(ctx)
		return err
	}); err != nil {
		return err
	}
	// The key is gone whatever happens now; failures only leave garbage
	// for Cleanup, so they are logged, not returned.
	for _, dir := range removals {
		s.removeDir(ctx, dir)
	}
	return nil
}

// Cleanup deletes the directories of removed snapshots and of snapshots
// whose creation was interrupted.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var removals []string
	// A write transaction keeps creations out while the directory is read.
	if err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		removals, err = s.unreferencedDirs(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, dir := range removals {
		s.removeDir(ctx, dir)
	}
	return nil
}

// unreferencedDirs lists the snapshot directories that no snapshot in the
// metastore owns. It must run inside a transaction.
func (s *Snapshotter) unreferencedDirs(ctx context.Context) ([]string, error) {
	ids, err := storage.IDMap(ctx)
	if err != nil {
		return nil, fmt.Errorf("list snapshot ids: %w", err)
	}
	entries, err := os.ReadDir(s.snapshotsDir())
	if err != nil {
		return nil, fmt.Errorf("list snapshot directories: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		if _, ok := ids[e.Name()]; !ok {
			dirs = append(dirs, filepath.Join(s.snapshotsDir(), e.Name()))
		}
	}
	return dirs, nil
}

// removeDir deletes a snapshot directory, unmounting its fs first if it is
// a mountpoint. If the unmount fails the directory is kept: RemoveAll would
// otherwise walk into the mounted layer.
func (s *Snapshotter) removeDir(ctx context.Context, dir string) {
	if err := s.unmount(ctx, filepath.Join(dir, "fs")); err != nil {
		log.G(ctx).WithError(err).WithField("path", dir).Warn("cannot unmount snapshot; keeping its directory")
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		log.G(ctx).WithError(err).WithField("path", dir).Warn("cannot remove snapshot directory")
	}
}

// unmount releases mp if it is mounted: through the FileSystem first, and
// with a lazy unmount if the FileSystem does not know the mount (a mount
// left by a previous run, or a dead FUSE server).
func (s *Snapshotter) unmount(ctx context.Context, mp string) error {
	if !isMounted(mp) {
		return nil
	}
	fsErr := s.fs.Unmount(ctx, mp)
	if !isMounted(mp) {
		return nil
	}
	if err := mount.UnmountAll(mp, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w (file system said: %v)", mp, err, fsErr)
	}
	return nil
}

// isMounted reports whether something is mounted on mp. An error other
// than "does not exist" (ENOTCONN from a dead FUSE server, typically)
// counts as mounted: something is there and must be released.
func isMounted(mp string) bool {
	mounted, err := mountinfo.Mounted(mp)
	if errors.Is(err, iofs.ErrNotExist) {
		return false
	}
	return err != nil || mounted
}

// UnmountAll unmounts every lazy layer. The daemon calls it when asked to
// stop for good (SIGINT); on SIGTERM mounts stay for the next run.
func (s *Snapshotter) UnmountAll(ctx context.Context) error {
	layers, err := s.remoteLayers(ctx)
	if err != nil {
		return err
	}
	var failed int
	for _, l := range layers {
		if err := s.unmount(ctx, s.upperPath(l.id)); err != nil {
			log.G(ctx).WithError(err).WithField("snapshot", l.name).Warn("cannot unmount lazy layer")
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("unmount lazy layers: %d of %d failed", failed, len(layers))
	}
	return nil
}

func (s *Snapshotter) dir(id string) string { return filepath.Join(s.snapshotsDir(), id) }
