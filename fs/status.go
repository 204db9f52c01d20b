package fs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
)

// fuseType is the file system type of ociseek's FUSE mounts in the mount
// table ("fuse." + the Name fs/layer mounts with).
const fuseType = "fuse.ociseek"

// LayerStatus is what is known about one mounted layer, for status and
// "explain" output.
type LayerStatus struct {
	// Mountpoint is where the layer is mounted.
	Mountpoint string
	// Layer names the layer (Size as resolved: from the label or zTOC).
	Layer LayerRef
	// Entries is the number of names in the layer's tree.
	Entries int
	// Fetched and Total are the compressed bytes verified so far and the
	// blob size.
	Fetched, Total int64
	// Complete is true once every span is verified and cached and the
	// layer digest checked.
	Complete bool
	// Failed is the verification failure that made the layer unusable,
	// or nil.
	Failed error
	// LastContact is when the registry last answered for this layer.
	LastContact time.Time
	// LastError is the last registry failure since LastContact, or nil.
	LastError error
	// MountedAt is when the mount was made.
	MountedAt time.Time
	// Background is the background fetcher's last step error, when
	// background fetching is on.
	Background error
}

// Status returns the status of the layer at mountpoint; an unknown
// mountpoint gives an error wrapping errdefs.ErrNotFound.
func (f *FS) Status(mountpoint string) (LayerStatus, error) {
	m, err := f.get(mountpoint)
	if err != nil {
		return LayerStatus{}, err
	}
	return f.status(m), nil
}

// Layers returns the status of every mounted layer, by mountpoint.
func (f *FS) Layers() []LayerStatus {
	f.mu.Lock()
	ms := make([]*mounted, 0, len(f.layers))
	for _, m := range f.layers {
		if m != nil {
			ms = append(ms, m)
		}
	}
	f.mu.Unlock()
	out := make([]LayerStatus, len(ms))
	for i, m := range ms {
		out[i] = f.status(m)
	}
	slices.SortFunc(out, func(a, b LayerStatus) int { return strings.Compare(a.Mountpoint, b.Mountpoint) })
	return out
}

func (f *FS) status(m *mounted) LayerStatus {
	st := LayerStatus{Mountpoint: m.mountpoint, Layer: m.ref, Entries: m.entries,
		Complete: m.mgr.Complete(), Failed: m.mgr.Failed(), MountedAt: m.mountedAt}
	st.Fetched, st.Total = m.mgr.Progress()
	h := m.blob.Health()
	st.LastContact, st.LastError = h.LastContact, h.LastError
	if f.sched != nil {
		if bs, err := f.sched.Status(m.mountpoint); err == nil {
			st.Background = bs.Err
		}
	}
	return st
}

// unmountStale releases an ociseek mount the FS does not track (left by a
// previous run; its server is gone). It only touches ociseek's own FUSE
// mounts, so a wrong path cannot unmount something else.
func unmountStale(mp string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil {
		return fmt.Errorf("unmount %s: read mount table: %w", mp, err)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("unmount %s: no layer mounted there: %w", mp, errdefs.ErrNotFound)
	}
	if t := mounts[len(mounts)-1].FSType; t != fuseType {
		return fmt.Errorf("unmount %s: mounted file system is %s, not an ociseek layer: %w", mp, t, errdefs.ErrNotFound)
	}
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount stale layer mount %s: %w", mp, err)
	}
	return nil
}

// unverifiedLayers counts the mounted layers that the completion pass has
// not verified (and that have not failed): the ociseek_fs_layers_unverified
// gauge.
func (f *FS) unverifiedLayers() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.layers {
		if m != nil && !m.mgr.Complete() && m.mgr.Failed() == nil {
			n++
		}
	}
	return float64(n)
}
