// Package snapshot is ociseek's containerd snapshotter: overlay snapshots
// kept in containerd's bolt metastore, plus the remote-snapshot protocol that
// lets a layer be served lazily instead of being pulled.
//
// Concepts a reader needs:
//
//   - An "unpack Prepare" is a Prepare whose labels name a target chain ID
//     (snapshots.LabelSnapshotRef). For it the snapshotter asks its
//     FileSystem to mount the layer, decides an Outcome from the result
//     (decide, in decision.go) and serves it: lazy (FUSE mount, commit under
//     the target, answer errdefs.ErrAlreadyExists so containerd skips the
//     layer), local unpack (the daemon fetches, verifies and unpacks the layer
//     itself through a LayerUnpacker, then commits the same way), or overlay
//     (ordinary directories; containerd pulls). The outcome and its reason
//     are stored as snapshot labels (LabelDecision, LabelDecisionReason) and
//     counted in a metric.
//   - Lazily served snapshots carry LabelRemote. On start they are mounted
//     again from their stored labels; Remove and Cleanup unmount them before
//     deleting their directories.
//
// Hazards: a FUSE mountpoint must never be removed with os.RemoveAll while
// mounted (the walk would go through the mount); FileSystem.Mount is called
// outside any bolt transaction, because it may take seconds and the
// metastore allows one writer.
//
// On-disk layout under root: metadata.db and snapshots/<id>/{fs,work}; new
// snapshot directories are built as snapshots/new-* and renamed into place.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/log"
	"github.com/ociseek/ociseek/internal/label"
	"github.com/prometheus/client_golang/prometheus"
)

// Labels the snapshotter writes on snapshots it serves for unpack Prepares.
const (
	// LabelRemote marks a snapshot whose directory is a FileSystem mount.
	// The key and value are the ones SOCI and stargz use, so tools that
	// know them recognise ociseek's lazy snapshots.
	LabelRemote = "containerd.io/snapshot/remote"
	// LabelRemoteValue is the value of LabelRemote.
	LabelRemoteValue = "remote snapshot"
	// LabelDecision holds the Outcome chosen for the layer.
	LabelDecision = "ociseek.io/snapshot/decision"
	// LabelDecisionReason holds the Reason for LabelDecision.
	LabelDecisionReason = "ociseek.io/snapshot/decision-reason"
	// LabelLayerSize is the layer blob's size in bytes, decimal, as
	// nerdctl's SOCI handler sends it (CRI does not). WithMinLayerSize
	// compares it. The key is SOCI's, declared in package label.
	LabelLayerSize = label.LayerSize
	// LabelNamespace records the containerd namespace of the unpack, for
	// FileSystems that need it when a mount is restored.
	LabelNamespace = "containerd.io/snapshot/remote/namespace"
)

// FileSystem mounts layers lazily. It is the seam between the snapshotter
// and ociseek's FUSE file system; the daemon supplies it.
//
// Contract: Mount either mounts the layer described by labels at mountpoint
// (an existing empty directory) and returns nil, or leaves nothing mounted
// and returns an error; an error wrapping index.ErrNoIndex or
// index.ErrNoZtoc says why the layer cannot be served lazily. Check reports
// whether a mounted layer is still usable (for example, its registry still
// answers). Unmount releases the mount; it is called once for each
// successful Mount, and also on start for mounts left by a previous run.
type FileSystem interface {
	Mount(ctx context.Context, mountpoint string, labels map[string]string) error
	Check(ctx context.Context, mountpoint string, labels map[string]string) error
	Unmount(ctx context.Context, mountpoint string) error
}

// LayerUnpacker unpacks a whole layer into dir: it fetches the blob named
// by labels, verifies its digests (including the diffID) and applies the tar
// stream. On error dir may hold partial content; the snapshotter empties it.
type LayerUnpacker interface {
	Unpack(ctx context.Context, dir string, labels map[string]string) error
}

// Snapshotter is a containerd snapshots.Snapshotter (and snapshots.Cleaner)
// that serves layers lazily through a FileSystem when it can.
type Snapshotter struct {
	root         string
	ms           *storage.MetaStore
	fs           FileSystem
	unpacker     LayerUnpacker
	lazyDisabled bool
	minLayerSize int64
	asyncRemove  bool
	mountOptions []string
	mountTimeout time.Duration
	metrics      *metrics
	// completionOff: lazy layers are labelled mounted-unverified.
	completionOff bool
}

var (
	_ snapshots.Snapshotter = (*Snapshotter)(nil)
	_ snapshots.Cleaner     = (*Snapshotter)(nil)
)

type options struct {
	unpacker     LayerUnpacker
	lazyDisabled bool
	minLayerSize int64
	asyncRemove  bool
	noRestore    bool
	allowInvalid bool
	registerer   prometheus.Registerer
	mountOptions []string
	mountTimeout time.Duration
	// completionOff: the FileSystem never completes (so never verifies)
	// layers as a whole.
	completionOff bool
	// userXattr is nil when New detects whether overlay needs
	// "userxattr", else the caller's answer.
	userXattr *bool
}

// Opt configures a Snapshotter.
type Opt func(*options) error

// WithUnpacker sets the LayerUnpacker used for the local-unpack outcome.
// Without one, layers that cannot be mounted lazily go the overlay way.
func WithUnpacker(u LayerUnpacker) Opt {
	return func(o *options) error { o.unpacker = u; return nil }
}

// DisableLazy turns lazy loading off: every layer goes the overlay way and
// the FileSystem is never asked to mount.
func DisableLazy() Opt {
	return func(o *options) error { o.lazyDisabled = true; return nil }
}

// WithMinLayerSize serves layers smaller than n bytes, as their
// LabelLayerSize label says, by local unpack rather than lazily: for a
// small layer a FUSE mount costs more than it saves. Layers without the
// label are not affected. Zero (the default) means no minimum.
func WithMinLayerSize(n int64) Opt {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("negative minimum layer size %d", n)
		}
		o.minLayerSize = n
		return nil
	}
}

// AsynchronousRemove defers deleting snapshot directories to Cleanup.
func AsynchronousRemove() Opt {
	return func(o *options) error { o.asyncRemove = true; return nil }
}

// NoRestore skips mounting again, in New, the lazy snapshots left by a
// previous run.
func NoRestore() Opt {
	return func(o *options) error { o.noRestore = true; return nil }
}

// AllowInvalidMountsOnRestart lets New succeed when some lazy snapshots
// cannot be mounted again; they stay unusable until removed.
func AllowInvalidMountsOnRestart() Opt {
	return func(o *options) error { o.allowInvalid = true; return nil }
}

// WithRegisterer registers the snapshotter's metrics on reg.
func WithRegisterer(reg prometheus.Registerer) Opt {
	return func(o *options) error { o.registerer = reg; return nil }
}

// WithMountTimeout bounds each FileSystem.Mount of an unpack Prepare; a
// mount that takes longer is cancelled through its ctx and the layer is
// served another way. Zero (the default) means no bound beyond the
// caller's ctx.
func WithMountTimeout(d time.Duration) Opt {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("negative mount timeout %s", d)
		}
		o.mountTimeout = d
		return nil
	}
}

// WithUserXattr says whether overlay mounts need "userxattr" (a user
// namespace), instead of New detecting it. The daemon detects it once and
// tells both the snapshotter and its FileSystem, whose opaque directories
// must then answer the "user.overlay." xattrs overlay will ask for.
func WithUserXattr(need bool) Opt {
	return func(o *options) error { o.userXattr = &need; return nil }
}

// WithCompletionOff tells the snapshotter that its FileSystem does not
// complete mounted layers in the background, so a lazy layer is never
// verified as a whole; its decision reason says so (mounted-unverified)
// and "ociseek explain" shows it.
func WithCompletionOff() Opt {
	return func(o *options) error { o.completionOff = true; return nil }
}

// WithMountOptions adds options to every overlay mount.
func WithMountOptions(opts ...string) Opt {
	return func(o *options) error { o.mountOptions = append(o.mountOptions, opts...); return nil }
}

// New opens (or creates) a snapshotter under root. It checks that root
// supports d_type and overlayfs, detects whether overlay needs "userxattr",
// and, unless NoRestore is given, mounts again the lazy snapshots of a
// previous run.
func New(ctx context.Context, root string, fsys FileSystem, opts ...Opt) (_ *Snapshotter, err error) {
	if fsys == nil {
		return nil, errors.New("new snapshotter: nil FileSystem")
	}
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("new snapshotter: %w", err)
		}
	}
	if err := prepareRoot(root); err != nil {
		return nil, err
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, fmt.Errorf("register snapshotter metrics: %w", err)
	}
	ms, err := openMetaStore(ctx, filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{
		root:         root,
		ms:           ms,
		fs:           fsys,
		unpacker:     o.unpacker,
		lazyDisabled: o.lazyDisabled,
		minLayerSize: o.minLayerSize,
		asyncRemove:  o.asyncRemove,
		mountOptions: overlayOptions(ctx, root, o.mountOptions, o.userXattr),
		mountTimeout: o.mountTimeout,
		metrics:      m,

		completionOff: o.completionOff,
	}
	defer func() {
		if err != nil {
			ms.Close()
			if o.registerer != nil {
				o.registerer.Unregister(m.decisions)
			}
		}
	}()
	if !o.noRestore {
		if err := s.restore(ctx, o.allowInvalid); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// prepareRoot creates root and its snapshots directory and checks the
// backing file system: overlay needs d_type, and the kernel must have
// overlayfs.
func prepareRoot(root string) error {
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return fmt.Errorf("create snapshotter root: %w", err)
	}
	ok, err := fs.SupportsDType(root)
	if err != nil {
		return fmt.Errorf("check d_type support of %s: %w", root, err)
	}
	if !ok {
		return fmt.Errorf("%s does not support d_type; if it is xfs, reformat it with ftype=1", root)
	}
	if err := overlayutils.Supported(root); err != nil {
		return fmt.Errorf("overlayfs is not usable on %s (load the overlay module): %w", root, err)
	}
	return nil
}

// overlayOptions completes the configured overlay options with what the
// kernel and root need: "userxattr" inside a user namespace (as userXattr
// says, or detected when it is nil), and "index=off" so that lower layers
// can be shared between mounts.
func overlayOptions(ctx context.Context, root string, opts []string, userXattr *bool) []string {
	opts = append([]string(nil), opts...)
	if !hasOption(opts, "userxattr") {
		var need bool
		if userXattr != nil {
			need = *userXattr
		} else {
			var err error
			if need, err = overlayutils.NeedsUserXAttr(root); err != nil {
				log.G(ctx).WithError(err).Warnf("cannot tell whether overlay needs userxattr; assuming %v", need)
			}
		}
		if need {
			opts = append(opts, "userxattr")
		}
	}
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil && !hasOption(opts, "index") {
		opts = append(opts, "index=off")
	}
	return opts
}

func hasOption(opts []string, key string) bool {
	for _, o := range opts {
		if k, _, _ := strings.Cut(o, "="); k == key {
			return true
		}
	}
	return false
}

// Stat returns the info of an active or committed snapshot.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes the labels of a snapshot.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (newInfo snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		newInfo, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return newInfo, err
}

// Usage returns the disk usage of a snapshot: scanned for active ones,
// recorded at commit for committed ones (zero for lazy layers, whose bytes
// live in the span cache).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	}); err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindActive {
		du, err := fs.DiskUsage(ctx, s.upperPath(id))
		if err != nil {
			return snapshots.Usage{}, fmt.Errorf("disk usage of snapshot %s: %w", key, err)
		}
		usage = snapshots.Usage(du)
	}
	return usage, nil
}

// Walk calls fn for every snapshot matching the filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Mounts returns the mounts of an active or view snapshot, after checking
// that the lazy layers below it are still usable.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap storage.Snapshot
	if err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	}); err != nil {
		return nil, fmt.Errorf("get mounts of snapshot %s: %w", key, err)
	}
	if err := s.checkParents(ctx, key); err != nil {
		return nil, err
	}
	return s.mounts(snap), nil
}

// Close closes the metadata store. Lazy mounts stay in place (so that the
// next run can take them over); use UnmountAll to release them first.
func (s *Snapshotter) Close() error {
	return s.ms.Close()
}

func (s *Snapshotter) snapshotsDir() string { return filepath.Join(s.root, "snapshots") }
func (s *Snapshotter) upperPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "fs")
}
func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "work")
}
