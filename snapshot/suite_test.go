package snapshot

import (
	"context"
	"errors"
	"os"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
)

// failingFS is the FileSystem of a daemon that can never serve a layer
// lazily: every layer goes the overlay way.
type failingFS struct{}

func (failingFS) Mount(context.Context, string, map[string]string) error {
	return errors.New("lazy loading unavailable")
}
func (failingFS) Check(context.Context, string, map[string]string) error {
	return errors.New("lazy loading unavailable")
}
func (failingFS) Unmount(context.Context, string) error { return nil }

// suiteFactory returns a containerd testsuite factory for a snapshotter on
// fsys. cmd/ociseek-snapshotter runs the same suite with the real lazy file
// system, wired as the daemon wires it (snapshot may not import fs).
func suiteFactory(fsys FileSystem) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, err := New(ctx, root, fsys)
		if err != nil {
			return nil, nil, err
		}
		return sn, sn.Close, nil
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts overlay and bind mounts")
	}
}

// TestSnapshotterSuiteOverlay runs containerd's conformance suite with a
// FileSystem that always fails, which is the overlay path every
// unindexed image takes.
func TestSnapshotterSuiteOverlay(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	// The suite keys known backend limits on the name: ours is overlayfs
	// underneath, so directory renames in lower layers are not expected
	// (no redirect_dir), exactly as for containerd's own overlay plugin.
	testsuite.SnapshotterSuite(t, "overlayfs", suiteFactory(failingFS{}))
}

// TestSnapshotterSuiteFSUntouched runs the suite a second time with a
// FileSystem that fails the test when called. The suite's Prepares carry
// no target label, so this leg shows that snapshots other than layer
// unpacks never reach the FileSystem.
// The lazy outcome itself is covered by the decision tests; the leg with
// the real FUSE file system is TestSnapshotterSuiteLazyFS in
// cmd/ociseek-snapshotter.
func TestSnapshotterSuiteFSUntouched(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	testsuite.SnapshotterSuite(t, "overlayfs", suiteFactory(&neverFS{t: t}))
}

// neverFS fails the test if the snapshotter calls it.
type neverFS struct{ t *testing.T }

func (f *neverFS) Mount(context.Context, string, map[string]string) error {
	f.t.Error("FileSystem.Mount called for a snapshot that is not a layer unpack")
	return nil
}
func (f *neverFS) Check(context.Context, string, map[string]string) error {
	f.t.Error("FileSystem.Check called, but no snapshot is lazy")
	return nil
}
func (f *neverFS) Unmount(context.Context, string) error { return nil }
