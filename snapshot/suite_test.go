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
// fsys. The integration tests run the same suite with the real lazy FS.
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
	// The suite keys known backend limits on the name: ours is overlayfs
	// underneath, so directory renames in lower layers are not expected
	// (no redirect_dir), exactly as for containerd's own overlay plugin.
	testsuite.SnapshotterSuite(t, "overlayfs", suiteFactory(failingFS{}))
}
