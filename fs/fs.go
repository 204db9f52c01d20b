// Package fs mounts image layers lazily: it turns the labels of a layer's
// unpack Prepare into a FUSE mount that serves the layer's files, fetching
// their bytes from the registry on demand. It implements the snapshot
// package's FileSystem (Mount, Check, Unmount) and tracks which layer is
// mounted where.
//
// Concepts:
//   - A mount is assembled from parts other packages own: the zTOC comes
//     from a ZtocSource (index/discover, wired in cmd), ranged access to
//     the blob from a BlobOpener (fs/remote through RemoteBlobs), kept as
//     a remote.Live that fs/span reads directly, span fetching and
//     verification from fs/span, the on-disk span cache from fs/cache, the
//     file tree from fs/layer, background completion from fs/bgfetch. fs
//     only orders the steps and owns the lifecycle.
//   - Mount either leaves the layer mounted and recorded, or leaves nothing
//     behind (no FUSE server, no span manager, no background job). Errors
//     from the ZtocSource come back wrapped, unchanged underneath, so the
//     snapshotter can test them for index.ErrNoIndex and index.ErrNoZtoc.
//   - Check is cheap when the registry answered recently; otherwise it
//     has the layer's remote.Live reprobe: open the blob again and, on
//     success, swap the new connection under the span manager
//     (re-resolution).
//   - The span cache is shared by every layer and keyed by layer digest, so
//     two mounts of one layer share spans and a restart keeps them warm;
//     Unmount therefore does not delete a layer's cached spans (the cache's
//     size bound evicts them).
//
// Hazards: a mountpoint is a live FUSE mount until Unmount returns; never
// remove it with os.RemoveAll before. The registry and the zTOC are
// untrusted; the packages below bound and verify what they read.
package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/fs/layer"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/ztoc"
)

// ZtocSource finds and fetches the zTOC of a layer; index/discover supplies
// it through a small adapter in cmd. Lookup returns an error wrapping
// index.ErrNoIndex when the image has no SOCI index and index.ErrNoZtoc
// when its index does not cover the layer; Mount passes both through.
// Lookup must honour ctx (Mount bounds it by the mount timeout).
type ZtocSource interface {
	Lookup(ctx context.Context, l LayerRef) (*ztoc.Ztoc, error)
}

// Defaults for the options.
const (
	// DefaultMountTimeout bounds zTOC lookup and blob resolution of a Mount.
	DefaultMountTimeout = 30 * time.Second
	// DefaultCheckInterval is how long after the registry last answered
	// Check trusts the connection without probing it.
	DefaultCheckInterval = time.Minute
	// DefaultCheckTimeout bounds the probe of a Check.
	DefaultCheckTimeout = 10 * time.Second
)

// ErrClosed reports a call on a closed FS.
var ErrClosed = errors.New("file system closed")

// FS mounts layers lazily and tracks them by mountpoint. It is safe for
// concurrent use. Close unmounts everything and stops background work.
type FS struct {
	root    string
	src     ZtocSource
	blobs   BlobOpener
	cfg     options
	cache   *cache.Cache
	sched   *bgfetch.Scheduler // nil when background fetch is off
	spanMet *span.Metrics
	met     *metrics
	// fetchLimit bounds range streams across layers; nil: unbounded.
	fetchLimit *remote.FetchLimit

	// mu guards layers and closed. A nil value in layers is a mount in
	// progress: it reserves the mountpoint.
	mu      sync.Mutex
	layers  map[string]*mounted
	closed  bool
	pending sync.WaitGroup // Mount calls in progress

	mem memoryRelease // returns what mounts used transiently
	// rejected records (layer, zTOC) pairs that failed verification.
	rejected rejections
}

// New checks the environment and returns an FS keeping its state (the span
// cache, unless WithCacheDir says otherwise) under root. It starts the
// background fetcher when WithBackgroundFetch is given.
func New(root string, src ZtocSource, blobs BlobOpener, opts ...Opt) (*FS, error) {
	if src == nil || blobs == nil {
		return nil, errors.New("new file system: a ZtocSource and a BlobOpener are required")
	}
	cfg := defaultOptions()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("new file system: %w", err)
		}
	}
	if err := checkFUSE(); err != nil {
		return nil, err
	}
	if err := applyMemoryBudget(cfg.memory, &cfg.spanOpts, cfg.registerer); err != nil {
		return nil, fmt.Errorf("new file system: %w", err)
	}
	// Passthrough copies of a previous run are referenced by nothing.
	if err := os.RemoveAll(filepath.Join(root, filesDirName)); err != nil {
		return nil, fmt.Errorf("new file system: remove old passthrough copies: %w", err)
	}
	if cfg.cacheDir == "" {
		cfg.cacheDir = filepath.Join(root, "cache")
	}
	c, err := cache.New(cfg.cacheDir, cfg.cacheOpts...)
	if err != nil {
		return nil, fmt.Errorf("new file system: open span cache: %w", err)
	}
	f := &FS{root: root, src: src, blobs: blobs, cfg: cfg, cache: c, layers: map[string]*mounted{},
		rejected: rejections{dir: filepath.Join(root, rejectedDirName)}, mem: memoryRelease{goFloor: cfg.memory.goLimit}}
	if f.spanMet, err = span.NewMetrics(cfg.registerer); err != nil {
		c.Close()
		return nil, fmt.Errorf("new file system: %w", err)
	}
	if f.met, err = newMetrics(cfg.registerer); err != nil {
		c.Close()
		return nil, fmt.Errorf("new file system: %w", err)
	}
	if cfg.registerer != nil {
		unverified := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ociseek", Subsystem: "fs", Name: "layers_unverified",
			Help: "Mounted layers not (yet) verified as a whole by the completion pass: their checkpoints and file list are trusted as the index says. Stays above zero when background completion is off.",
		}, f.unverifiedLayers)
		if err := cfg.registerer.Register(unverified); err != nil {
			c.Close()
			return nil, fmt.Errorf("new file system: register fs metrics: %w", err)
		}
	}
	f.fetchLimit = remote.NewFetchLimit(cfg.maxFetches)
	if cfg.bgfetch != nil {
		f.sched = bgfetch.New(*cfg.bgfetch)
	}
	return f, nil
}

// checkFUSE fails early, with what to fix, on a host without FUSE.
func checkFUSE() error {
	fd, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("lazy loading needs FUSE: %w (load the fuse module, or give the container /dev/fuse and CAP_SYS_ADMIN)", err)
	}
	return fd.Close()
}

// Close unmounts every layer, stops background fetching and closes the
// cache. Mounts in progress finish first. Layers whose unmount fails are
// detached (lazy unmount) so that Close never hangs on a busy mount.
func (f *FS) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	f.pending.Wait()
	f.mem.close()

	f.mu.Lock()
	layers := f.layers
	f.layers = map[string]*mounted{}
	f.mu.Unlock()
	var errs []error
	for _, m := range layers {
		if m != nil {
			errs = append(errs, f.release(m))
		}
	}
	if f.sched != nil {
		errs = append(errs, f.sched.Close())
	}
	errs = append(errs, f.cache.Close())
	return errors.Join(errs...)
}

// Detach stops background fetching and closes the span cache, but leaves
// every FUSE mount in place, for a daemon that stops so that its next start
// takes the mounts over (snapshot's restore). It waits for the current
// background step to end, so no span is left half written. After Detach the
// FS serves nothing; only Close may follow.
func (f *FS) Detach() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	f.pending.Wait()
	f.mem.close()
	var errs []error
	if f.sched != nil {
		errs = append(errs, f.sched.Close())
	}
	errs = append(errs, f.cache.Close())
	return errors.Join(errs...)
}

// Opt configures an FS.
type Opt func(*options) error

// options holds New's knobs.
type options struct {
	keeper        SessionKeeper // WithSessionKeeper (handoff.go)
	mountTimeout  time.Duration
	checkInterval time.Duration
	checkTimeout  time.Duration
	cacheDir      string
	cacheOpts     []cache.Opt
	spanOpts      span.Options
	bgfetch       *bgfetch.Options
	registerer    prometheus.Registerer
	mountOpts     layer.MountOptions
	layerOpts     layer.Options
	maxFetches    int
	passthrough   bool
	rejectedErr   error
	memory        memoryBudget // WithMemoryLimit (memory.go)
}

func defaultOptions() options {
	return options{
		mountTimeout:  DefaultMountTimeout,
		checkInterval: DefaultCheckInterval,
		checkTimeout:  DefaultCheckTimeout,
		passthrough:   true,
	}
}

// WithRejectedError makes a Mount refused because the layer's zTOC failed
// verification before also wrap err (cmd passes the index package's
// sentinel, which the snapshotter turns into a decision reason).
func WithRejectedError(err error) Opt {
	return func(o *options) error {
		o.rejectedErr = err
		return nil
	}
}

// WithMountTimeout bounds the zTOC lookup and blob resolution of each
// Mount (DefaultMountTimeout by default); zero means only the caller's ctx
// bounds them.
func WithMountTimeout(d time.Duration) Opt {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("mount timeout %v is negative", d)
		}
		o.mountTimeout = d
		return nil
	}
}

// WithCheck sets how long after the registry last answered Check skips its
// probe (zero: always probe) and how long a probe may take.
func WithCheck(interval, timeout time.Duration) Opt {
	return func(o *options) error {
		if interval < 0 || timeout <= 0 {
			return fmt.Errorf("check interval %v / timeout %v: want interval >= 0 and timeout > 0", interval, timeout)
		}
		o.checkInterval, o.checkTimeout = interval, timeout
		return nil
	}
}

// WithCacheDir puts the span cache in dir instead of <root>/cache.
func WithCacheDir(dir string) Opt {
	return func(o *options) error {
		o.cacheDir = dir
		return nil
	}
}

// WithCacheOptions passes options (size bound) to the span cache.
func WithCacheOptions(opts ...cache.Opt) Opt {
	return func(o *options) error {
		o.cacheOpts = append(o.cacheOpts, opts...)
		return nil
	}
}

// WithSpanOptions sets the span managers' knobs (verification mode,
// fetch-ahead, parallelism). LayerDigest, Metrics and Foreground are
// filled in by the FS.
func WithSpanOptions(so span.Options) Opt {
	return func(o *options) error {
		o.spanOpts = so
		return nil
	}
}

// WithMaxFetches bounds the range requests in flight across every mounted
// layer (each span manager also bounds its own, span.Options.MaxParallel);
// zero means no common bound. A stream holds its slot until closed.
func WithMaxFetches(n int) Opt {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("max fetches %d is negative", n)
		}
		o.maxFetches = n
		return nil
	}
}

// WithBackgroundFetch turns background completion of mounted layers on.
func WithBackgroundFetch(bo bgfetch.Options) Opt {
	return func(o *options) error {
		o.bgfetch = &bo
		return nil
	}
}

// WithRegisterer registers the FS's and the span managers' metrics on reg.
func WithRegisterer(reg prometheus.Registerer) Opt {
	return func(o *options) error {
		o.registerer = reg
		return nil
	}
}

// WithMountOptions sets the FUSE mount knobs (kernel cache timeouts,
// largest read, debug output). Every mount allows other users.
func WithMountOptions(mo layer.MountOptions) Opt {
	return func(o *options) error {
		o.mountOpts = mo
		return nil
	}
}

// WithUserXattr makes opaque directories also answer
// "user.overlay.opaque", for overlay mounts made with "userxattr".
func WithUserXattr() Opt {
	return func(o *options) error {
		o.layerOpts.UserXattr = true
		return nil
	}
}

// WithPassthrough turns FUSE passthrough of complete layers on (the
// default) or off. On, a regular file opened in a layer whose every span
// is fetched and verified is copied once to <root>/files (removed on
// Unmount) and the kernel reads it directly, as fast as local disk; the
// copies count toward no cache bound. It needs Linux 6.9 or later;
// older kernels refuse it and reads go through FUSE as when it is off.
func WithPassthrough(on bool) Opt {
	return func(o *options) error {
		o.passthrough = on
		return nil
	}
}
