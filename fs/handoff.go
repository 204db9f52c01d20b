package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/fs/layer"
	"github.com/ociseek/ociseek/fs/span"
)

// SessionKeeper keeps the FUSE connections of lazy mounts alive while no
// daemon serves them (a holder process, or systemd's fd store; cmd wires
// one in). With a keeper, a daemon that stops without unmounting (SIGTERM,
// a crash, an upgrade) leaves every mount working: requests wait in the
// kernel until the next daemon adopts the connection (FS.Adopt).
type SessionKeeper interface {
	// Keep stores dev, an fd of the connection mounted at mountpoint,
	// with state, what a later daemon needs to serve it; it replaces
	// what was kept for mountpoint. The keeper holds its own copy of
	// the fd.
	Keep(mountpoint string, dev *os.File, state []byte) error
	// Drop forgets the connection at mountpoint (it was unmounted).
	Drop(mountpoint string) error
}

// HeldSession is a connection a keeper held for a previous daemon.
type HeldSession struct {
	Mountpoint string
	Dev        *os.File
	State      []byte
}

// handoffVersion is the version of keptState. A newer daemon reads every
// older version; fields are only added.
const handoffVersion = 1

// keptState is what a keeper stores beside a connection's fd.
type keptState struct {
	Version int `json:"version"`
	// The layer, as the mount's labels named it.
	ImageRef       string        `json:"image_ref"`
	ManifestDigest digest.Digest `json:"manifest_digest,omitempty"`
	LayerDigest    digest.Digest `json:"layer_digest"`
	IndexDigest    digest.Digest `json:"index_digest,omitempty"`
	Size           int64         `json:"size"`
	// Ztoc identifies the zTOC the tree was built from: the node IDs
	// the kernel holds are only valid for a tree of the same TOC.
	Ztoc    string        `json:"ztoc"`
	Handoff layer.Handoff `json:"handoff"`
	// Mount options the connection was negotiated with.
	MaxRead      int   `json:"max_read"`
	NoSetuid     bool  `json:"no_setuid,omitempty"`
	OwnerOnly    bool  `json:"owner_only,omitempty"`
	CacheTimeout int64 `json:"cache_timeout_ns,omitempty"`
}

func (k keptState) ref() LayerRef {
	return LayerRef{ImageRef: k.ImageRef, ManifestDigest: k.ManifestDigest, LayerDigest: k.LayerDigest,
		IndexDigest: k.IndexDigest, Size: k.Size}
}

func (k keptState) mountOptions(base layer.MountOptions) layer.MountOptions {
	base.MaxRead, base.NoSetuid, base.OwnerOnly = k.MaxRead, k.NoSetuid, k.OwnerOnly
	base.CacheTimeout = time.Duration(k.CacheTimeout)
	return base
}

// keep hands m's connection to the keeper, if there is one. A failure is
// logged: the mount works, it just will not outlive this daemon.
func (f *FS) keep(ctx context.Context, m *mounted, ztocID string) {
	if f.cfg.keeper == nil {
		return
	}
	mo := f.cfg.mountOpts
	st := keptState{Version: handoffVersion, ImageRef: m.ref.ImageRef, ManifestDigest: m.ref.ManifestDigest,
		LayerDigest: m.ref.LayerDigest, IndexDigest: m.ref.IndexDigest, Size: m.ref.Size, Ztoc: ztocID,
		Handoff: m.server.Handoff(), MaxRead: mo.MaxRead, NoSetuid: mo.NoSetuid, OwnerOnly: mo.OwnerOnly,
		CacheTimeout: int64(mo.CacheTimeout)}
	b, err := json.Marshal(st)
	if err == nil {
		err = f.cfg.keeper.Keep(m.mountpoint, m.server.Device(), b)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("mountpoint", m.mountpoint).
			Warn("the layer's FUSE connection is not kept: it will not survive a restart of the daemon")
	}
}

// drop tells the keeper that the connection at mp is gone.
func (f *FS) drop(ctx context.Context, mp string) {
	if f.cfg.keeper == nil {
		return
	}
	if err := f.cfg.keeper.Drop(mp); err != nil {
		log.G(ctx).WithError(err).WithField("mountpoint", mp).Warn("keeper did not drop the connection of an unmounted layer")
	}
}

// Adopt takes over the connections a keeper held for a previous daemon:
// each layer is resolved again (zTOC and blob, within the mount timeout),
// its tree rebuilt and served on the held connection, without remounting,
// so running containers keep their files. A connection that cannot be
// served again (its layer no longer resolves, a different zTOC, a state
// this daemon cannot read) answers EIO to every request instead of
// leaving its readers waiting, and is detached. Adopt returns the
// mountpoints it serves; Mount of one of them then reports ErrAlreadyExists
// and Serves reports true.
func (f *FS) Adopt(ctx context.Context, held []HeldSession) []string {
	var served []string
	for _, h := range held {
		mp := filepath.Clean(h.Mountpoint)
		lctx := log.WithLogger(ctx, log.G(ctx).WithField("mountpoint", mp))
		if err := f.adoptOne(lctx, mp, h); err != nil {
			log.G(lctx).WithError(err).Error("lazy layer of the previous daemon not taken over: its open files answer EIO")
			failSession(lctx, mp, h.Dev)
			f.drop(lctx, mp)
			continue
		}
		served = append(served, mp)
	}
	return served
}

func (f *FS) adoptOne(ctx context.Context, mp string, h HeldSession) error {
	var st keptState
	if err := json.Unmarshal(h.State, &st); err != nil {
		return fmt.Errorf("read hand-off state: %w", err)
	}
	if st.Version < 1 || st.Version > handoffVersion {
		return fmt.Errorf("hand-off state version %d: this daemon reads 1 to %d", st.Version, handoffVersion)
	}
	if err := f.reserve(mp); err != nil {
		return err
	}
	defer f.pending.Done()
	start := time.Now()
	m, err := f.assembleAdopted(ctx, mp, st, h.Dev)
	f.publish(mp, m, err)
	if err != nil {
		return err
	}
	f.met.mounted.Inc()
	log.G(ctx).WithField("layer", st.LayerDigest).Infof("lazy layer taken over from the previous daemon in %v", time.Since(start))
	return nil
}

// assembleAdopted is assemble for a held connection.
func (f *FS) assembleAdopted(ctx context.Context, mp string, st keptState, dev *os.File) (*mounted, error) {
	ref := st.ref()
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("layer", ref.LayerDigest))
	z, blob, err := f.resolve(ctx, &ref)
	if err != nil {
		return nil, fmt.Errorf("resolve layer %s: %w", ref.LayerDigest, err)
	}
	if id := span.ZtocIdentity(z); id != st.Ztoc {
		return nil, fmt.Errorf("layer %s: the zTOC is now %s, the mount was built from %s", ref.LayerDigest, id, st.Ztoc)
	}
	mgr, err := f.newManager(ctx, ref, z, blob)
	if err != nil {
		return nil, err
	}
	lo := f.cfg.layerOpts
	lo.Logger = log.G(ctx)
	root, err := layer.New(z.TOC, mgr, lo)
	if err != nil {
		mgr.Close()
		return nil, err
	}
	s, err := layer.Adopt(mp, dev, st.Handoff, root, st.mountOptions(f.cfg.mountOpts))
	if err != nil {
		mgr.Close()
		return nil, err
	}
	m := &mounted{mountpoint: mp, ref: ref, mgr: mgr, blob: blob, server: s, entries: root.Entries(), mountedAt: time.Now()}
	if m.dev, err = deviceOf(mp); err != nil {
		log.G(ctx).WithError(err).Warn("stat adopted mount")
	}
	f.keep(ctx, m, st.Ztoc) // the new handle epoch
	if f.sched != nil {
		f.sched.Add(mp, mgr)
	}
	return m, nil
}

// Serves reports whether the FS serves a layer at mountpoint (mounted or
// adopted by this process).
func (f *FS) Serves(mountpoint string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.layers[filepath.Clean(mountpoint)]
	return ok && m != nil
}

// failSession makes a held connection that cannot be served again answer
// EIO (layer.Fail) and detaches its mount, so new lookups cannot reach it;
// the connection ends when its last open file is closed.
func failSession(ctx context.Context, mp string, dev *os.File) {
	if err := layer.Fail(dev); err != nil {
		log.G(ctx).WithError(err).Warn("serve EIO on the held connection; aborting it")
		abortConnection(ctx, mp)
		dev.Close()
	}
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		log.G(ctx).WithError(err).Warn("detach the mount of a connection that is not served")
	}
}

// abortConnection aborts the FUSE connection mounted at mp through
// /sys/fs/fuse/connections (its id is the mount's device minor, read from
// the mount table: a stat of mp would wait for a server).
func abortConnection(ctx context.Context, mp string) {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil || len(mounts) == 0 {
		return
	}
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", mounts[len(mounts)-1].Minor)
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		log.G(ctx).WithError(err).WithField("path", p).Warn("abort FUSE connection")
	}
}

// WithSessionKeeper hands every lazy mount's FUSE connection to k, so that
// the mounts outlive this daemon (see SessionKeeper and FS.Adopt). FUSE
// passthrough is off then: the kernel fixes a file's I/O mode while it is
// open, and a daemon that takes a connection over does not know which
// files the previous one opened in which mode, so its opens could be
// refused; every open goes through FUSE (and the page cache) instead.
func WithSessionKeeper(k SessionKeeper) Opt {
	return func(o *options) error {
		o.keeper = k
		return nil
	}
}
