package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
)

// TestSnapshotterSuiteLazyFS runs containerd's snapshotter conformance
// suite against the snapshotter exactly as the daemon builds it: the real
// lazy file system (fs.New with FUSE, span cache and background fetcher)
// under it, wired by newService from the default configuration. The
// snapshot package runs the same suite over stand-in FileSystems; this leg
// shows that the real one, its start-up checks, its restore on open and its
// shutdown leave containerd's contract intact.
//
// The suite's Prepares carry no target label, so no layer is unpacked and
// the file system is never asked to mount: every snapshot is an overlay
// one. (An unpack with a target but without image labels would reach the
// real file system, which answers "no labels", and so go the overlay way
// too; TestDaemonServesSnapshotsAPI covers that.) Lazy layers under the
// real wiring are covered by TestLazyOutcome.
func TestSnapshotterSuiteLazyFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE, overlay and bind mounts")
	}
	// Named "overlayfs" because the suite keys known backend limits on the
	// name, and ours is overlayfs underneath.
	testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		cfg := config.Default()
		cfg.Daemon.Root = root
		cfg.Registry.DockerConfig = filepath.Join(root, "docker-config.json")
		svc, err := newService(ctx, cfg, prometheus.NewRegistry())
		if err != nil {
			return nil, nil, err
		}
		// The suite removes root afterwards, so nothing may stay mounted:
		// closing the file system unmounts whatever it mounted. (Not
		// svc.shutdown: the suite's CloseTwice has closed the metastore
		// already, which UnmountAll needs.)
		return svc.sn, func() error { return errors.Join(svc.fs.Close(), svc.sn.Close()) }, nil
	})
}
