package snapshot

import (
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// mounts builds the mounts of an active or view snapshot. The lower
// directories may be FileSystem mountpoints: overlay reads through them like
// any other directory.
//
//   - no parent: a bind mount of the snapshot's own directory (overlay needs
//     at least one lower directory);
//   - a view with one parent: a read-only bind of that parent;
//   - otherwise: overlay with the parents as lowerdir (nearest first) and,
//     for active snapshots, the snapshot's own upper and work directories.
func (s *Snapshotter) mounts(snap storage.Snapshot) []mount.Mount {
	if len(snap.ParentIDs) == 0 {
		mode := "rw"
		if snap.Kind == snapshots.KindView {
			mode = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.upperPath(snap.ID), Options: []string{mode, "rbind"}}}
	}
	var opts []string
	if snap.Kind == snapshots.KindActive {
		opts = append(opts, "workdir="+s.workPath(snap.ID), "upperdir="+s.upperPath(snap.ID))
	} else if len(snap.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: s.upperPath(snap.ParentIDs[0]), Options: []string{"ro", "rbind"}}}
	}
	lowers := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		lowers[i] = s.upperPath(id)
	}
	opts = append(opts, "lowerdir="+strings.Join(lowers, ":"))
	opts = append(opts, s.mountOptions...)
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
}
