package snapshot

import (
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

// TestWithUserXattr: the daemon's answer on "userxattr" reaches every
// overlay mount, whichever way it goes, instead of a second detection.
func TestWithUserXattr(t *testing.T) {
	for _, need := range []bool{true, false} {
		h := newHarness(t, t.TempDir(), newBindFS(t, nil), WithUserXattr(need))
		if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("unpack Prepare = %v", err)
		}
		mounts, err := h.sn.Prepare(h.ctx, "container", "layer-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(mounts) != 1 || mounts[0].Type != "overlay" {
			t.Fatalf("container mounts = %+v", mounts)
		}
		if got := slices.Contains(mounts[0].Options, "userxattr"); got != need {
			t.Errorf("WithUserXattr(%v): overlay options %v", need, mounts[0].Options)
		}
	}
}
