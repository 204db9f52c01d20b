package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/layer"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/ztoc"
)

// mounted is one layer served at one mountpoint. All fields but checkMu
// are set before the value is published in FS.layers and never change.
type mounted struct {
	mountpoint string
	ref        LayerRef
	mgr        *span.Manager
	files      *localFiles  // nil when passthrough is off
	blob       *remote.Live // the read path: fs/span reads it directly
	server     *layer.Session
	entries    int
	dev        uint64 // st_dev of the mount's root, to notice it vanishing
	mountedAt  time.Time
	// checkMu serialises Check's probes of this layer, so a burst of
	// Checks after an outage re-resolves once.
	checkMu sync.Mutex
}

// Mount mounts the layer described by labels (see LayerRefFromLabels) at
// mountpoint, an existing empty directory. On error nothing is mounted or
// recorded; an error from the ZtocSource is wrapped unchanged, so
// errors.Is(err, index.ErrNoIndex) and index.ErrNoZtoc work on it.
func (f *FS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	ref, err := LayerRefFromLabels(labels)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return f.MountLayer(ctx, mountpoint, ref)
}

// MountLayer is Mount for a LayerRef the caller has already resolved (the
// CLI's "ociseek mount").
func (f *FS) MountLayer(ctx context.Context, mountpoint string, ref LayerRef) error {
	mp := filepath.Clean(mountpoint)
	if err := f.reserve(mp); err != nil {
		return err
	}
	defer f.pending.Done()
	start := time.Now()
	m, err := f.assemble(ctx, mp, ref)
	f.publish(mp, m, err)
	if err != nil {
		f.met.mountSeconds.WithLabelValues("failed").Observe(time.Since(start).Seconds())
		return err
	}
	f.met.mountSeconds.WithLabelValues("mounted").Observe(time.Since(start).Seconds())
	f.met.mounted.Inc()
	f.mem.afterMount()
	log.G(ctx).WithField("mountpoint", mp).WithField("layer", ref.LayerDigest).
		Debugf("layer mounted lazily (%d entries) in %v", m.entries, time.Since(start))
	return nil
}

// publish ends the reservation of mp: m is recorded, or on err the name
// is free again.
func (f *FS) publish(mp string, m *mounted, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		delete(f.layers, mp)
		return
	}
	f.layers[mp] = m
}

// reserve claims mp for a Mount in progress.
func (f *FS) reserve(mp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("mount %s: %w", mp, ErrClosed)
	}
	if _, ok := f.layers[mp]; ok {
		return fmt.Errorf("mount %s: a layer is already mounted there: %w", mp, errdefs.ErrAlreadyExists)
	}
	f.layers[mp] = nil
	f.pending.Add(1)
	return nil
}

// assemble does the steps of a mount, undoing the finished ones on error.
// Only the remote steps (zTOC lookup, blob probe) are bounded by the mount
// timeout: the FUSE mount itself is local and quick.
func (f *FS) assemble(ctx context.Context, mp string, ref LayerRef) (*mounted, error) {
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("mountpoint", mp).WithField("layer", ref.LayerDigest))
	z, blob, err := f.resolve(ctx, &ref)
	if err != nil {
		return nil, fmt.Errorf("mount layer %s at %s: %w", ref.LayerDigest, mp, err)
	}
	ztocID := span.ZtocIdentity(z)
	mgr, err := f.newManager(ctx, ref, z, blob)
	if err != nil {
		return nil, fmt.Errorf("mount layer %s at %s: %w", ref.LayerDigest, mp, err)
	}
	m := &mounted{mountpoint: mp, ref: ref, mgr: mgr, blob: blob, mountedAt: time.Now()}
	if f.cfg.passthrough && f.cfg.keeper == nil {
		m.files = newLocalFiles(mgr, filepath.Join(f.root, filesDirName), ref.LayerDigest.Encoded(), log.G(ctx), f.met)
	}
	if err := f.serve(ctx, m, z); err != nil {
		if m.files != nil {
			_ = m.files.release()
		}
		mgr.Close()
		return nil, fmt.Errorf("mount layer %s at %s: %w", ref.LayerDigest, mp, err)
	}
	f.keep(ctx, m, ztocID)
	if f.sched != nil {
		f.sched.Add(mp, mgr)
	}
	return m, nil
}

// newManager makes the span manager of a layer, recording its zTOC as
// rejected when verification fails.
func (f *FS) newManager(ctx context.Context, ref LayerRef, z *ztoc.Ztoc, blob *remote.Live) (*span.Manager, error) {
	ztocID := span.ZtocIdentity(z)
	so := f.cfg.spanOpts
	so.LayerDigest, so.Metrics = ref.LayerDigest, f.spanMet
	so.OnFail = func(reason error) {
		rej := Rejection{Layer: ref.LayerDigest, Ztoc: ztocID, Image: ref.ImageRef, Reason: reason.Error(), At: time.Now().UTC()}
		if err := f.rejected.record(rej); err != nil {
			log.G(ctx).WithError(err).Error("could not record the rejected zTOC: a restart would mount it again")
		}
	}
	if f.sched != nil {
		so.Foreground = f.sched.Foreground
	}
	return span.New(z, blob, f.cache, so)
}

// resolve finds the zTOC and opens the blob, within the mount timeout. It
// fills in ref.Size from the zTOC when the labels did not give it.
func (f *FS) resolve(ctx context.Context, ref *LayerRef) (*ztoc.Ztoc, *remote.Live, error) {
	if f.cfg.mountTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.cfg.mountTimeout)
		defer cancel()
	}
	z, err := f.src.Lookup(ctx, *ref)
	if err != nil {
		return nil, nil, fmt.Errorf("find zTOC in %s: %w", ref.ImageRef, err)
	}
	if z == nil {
		return nil, nil, fmt.Errorf("find zTOC in %s: source returned no zTOC", ref.ImageRef)
	}
	switch {
	case ref.Size == 0:
		ref.Size = z.CompressedArchiveSize
	case ref.Size != z.CompressedArchiveSize:
		return nil, nil, fmt.Errorf("layer size %d (label) differs from the zTOC's archive size %d: %w",
			ref.Size, z.CompressedArchiveSize, errdefs.ErrInvalidArgument)
	}
	// Before the blob is probed: a rejected pair needs no registry.
	if err := f.refuseRejected(ref.LayerDigest, z); err != nil {
		return nil, nil, err
	}
	blob, err := f.openLive(ctx, *ref)
	if err != nil {
		return nil, nil, fmt.Errorf("open blob in %s: %w", ref.ImageRef, err)
	}
	return z, blob, nil
}

// refuseRejected fails when the pair of layer and z failed verification
// before (fs/rejected.go), wrapping ErrZtocRejected and the caller's
// sentinel (WithRejectedError).
func (f *FS) refuseRejected(layer digest.Digest, z *ztoc.Ztoc) error {
	ztocID := span.ZtocIdentity(z)
	rej, ok := f.rejected.lookup(layer, ztocID)
	if !ok {
		return nil
	}
	err := fmt.Errorf("zTOC %s: %w (%s); delete %s to try it again",
		ztocID, ErrZtocRejected, rej.Reason, f.rejected.path(layer, ztocID))
	if f.cfg.rejectedErr != nil {
		err = fmt.Errorf("%w: %w", err, f.cfg.rejectedErr)
	}
	return err
}

// serve builds the layer's tree and mounts it at m.mountpoint.
func (f *FS) serve(ctx context.Context, m *mounted, z *ztoc.Ztoc) error {
	lo := f.cfg.layerOpts
	lo.Logger = log.G(ctx)
	var r layer.Reader = m.mgr
	if m.files != nil {
		r = m.files // for FUSE passthrough once the layer is complete
	}
	root, err := layer.New(z.TOC, r, lo)
	if err != nil {
		return err
	}
	server, err := layer.Mount(m.mountpoint, root, f.cfg.mountOpts)
	if err != nil {
		return err
	}
	dev, err := deviceOf(m.mountpoint)
	if err != nil {
		_ = server.Unmount()
		return fmt.Errorf("stat new mount: %w", err)
	}
	m.server, m.entries, m.dev = server, root.Entries(), dev
	return nil
}

// deviceOf returns the st_dev of path.
func deviceOf(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Dev, nil
}

// Unmount unmounts the layer at mountpoint and releases its span manager
// and background job. A busy mount (open files) is detached instead: the
// name is free at once and the kernel drops the mount when the last file
// closes (reads then fail with EIO). A mountpoint the FS does not know
// (a mount left by a previous run) is detached if it is an ociseek FUSE
// mount; otherwise the error wraps errdefs.ErrNotFound.
func (f *FS) Unmount(ctx context.Context, mountpoint string) error {
	mp := filepath.Clean(mountpoint)
	f.mu.Lock()
	m, ok := f.layers[mp]
	if ok && m != nil {
		delete(f.layers, mp)
	}
	f.mu.Unlock()
	switch {
	case !ok:
		f.drop(ctx, mp)
		return unmountStale(mp)
	case m == nil:
		return fmt.Errorf("unmount %s: mount in progress: %w", mp, errdefs.ErrUnavailable)
	}
	f.drop(ctx, mp)
	if err := f.release(m); err != nil {
		return err
	}
	log.G(ctx).WithField("mountpoint", mp).WithField("layer", m.ref.LayerDigest).Debug("layer unmounted")
	return nil
}

// release ends one mount: background job, FUSE server, passthrough
// copies, span manager.
func (f *FS) release(m *mounted) error {
	if f.sched != nil {
		f.sched.Remove(m.mountpoint)
	}
	var errs []error
	if err := m.server.Unmount(); err != nil {
		// EINVAL: no longer mounted (released behind our back); done.
		derr := syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
		if derr != nil && !errors.Is(derr, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w (detach: %v)", m.mountpoint, err, derr))
		}
	}
	if m.files != nil {
		if err := m.files.release(); err != nil {
			errs = append(errs, fmt.Errorf("release layer %s: %w", m.ref.LayerDigest, err))
		}
	}
	if err := m.mgr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("release layer %s: %w", m.ref.LayerDigest, err))
	}
	f.met.mounted.Dec()
	return errors.Join(errs...)
}

// Check reports whether the layer at mountpoint is still usable: mounted,
// not failed verification, and its registry reachable. A layer whose
// registry answered within the check interval, or that is complete (every
// span verified and cached), is not probed. Otherwise the blob is opened
// again (a fresh probe, following redirects anew) and, if that works,
// replaces the old connection under the layer; if not, Check fails.
func (f *FS) Check(ctx context.Context, mountpoint string, _ map[string]string) error {
	m, err := f.get(mountpoint)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if err := m.usable(); err != nil {
		f.met.checks.WithLabelValues(checkFailed).Inc()
		return fmt.Errorf("check %s: %w", m.mountpoint, err)
	}
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	h := m.blob.Health()
	if m.mgr.Complete() || (h.LastError == nil && time.Since(h.LastContact) < f.cfg.checkInterval) {
		f.met.checks.WithLabelValues(checkRecent).Inc()
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, f.cfg.checkTimeout)
	defer cancel()
	if err := m.blob.Reprobe(pctx); err != nil {
		f.met.checks.WithLabelValues(checkFailed).Inc()
		return fmt.Errorf("check %s: registry of layer %s unreachable: %w", m.mountpoint, m.ref.LayerDigest, err)
	}
	f.met.checks.WithLabelValues(checkProbed).Inc()
	return nil
}

// usable reports a layer that no network can fix: failed verification, or
// its mount gone (unmounted behind our back, or the connection aborted).
func (m *mounted) usable() error {
	if err := m.mgr.Failed(); err != nil {
		return err
	}
	dev, err := deviceOf(m.mountpoint)
	if err != nil {
		return fmt.Errorf("mount is gone: %w", err)
	}
	if dev != m.dev {
		return errors.New("mount is gone: the directory is no longer the layer's mount")
	}
	return nil
}

// get returns the layer mounted at mountpoint.
func (f *FS) get(mountpoint string) (*mounted, error) {
	mp := filepath.Clean(mountpoint)
	f.mu.Lock()
	m, ok := f.layers[mp]
	f.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("no layer mounted at %s: %w", mp, errdefs.ErrNotFound)
	case m == nil:
		return nil, fmt.Errorf("layer at %s is still being mounted: %w", mp, errdefs.ErrUnavailable)
	}
	return m, nil
}
