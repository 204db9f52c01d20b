package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/plugins/snapshots/overlay/overlayutils"
	"github.com/containerd/log"
	"github.com/ociseek/ociseek/cmd/internal/lazyfs"
	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/discover"
	"github.com/ociseek/ociseek/snapshot"
	"github.com/ociseek/ociseek/snapshot/unpack"
	"github.com/prometheus/client_golang/prometheus"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// This file is where the packages meet: configuration values become
// options, and each interface a package declares gets its implementation.
// Keep every such decision here.

// service is what serve runs and stops: the snapshotter and, with lazy
// loading on, the lazy file system under it.
type service struct {
	sn  *snapshot.Snapshotter
	fs  *fs.FS      // nil with lazy loading off
	cri *criService // nil with [cri_keychain] off
	// keeper holds the lazy mounts' FUSE connections across restarts
	// (keeper.go); nil when no fd holder could be started.
	keeper *holderClient
}

// newService builds the snapshotter under <root>/snapshotter over the lazy
// file system under <root>/fs. With lazy loading off the file system is
// noIndexFS, so that a host without FUSE can still run the daemon.
func newService(ctx context.Context, cfg *config.Config, reg prometheus.Registerer) (*service, error) {
	userXattr, err := overlayNeedsUserXattr(ctx, filepath.Join(cfg.Daemon.Root, "snapshotter"))
	if err != nil {
		return nil, err
	}
	return newServiceXattr(ctx, cfg, reg, userXattr)
}

// newServiceXattr is newService once it is known whether overlay needs
// "userxattr".
func newServiceXattr(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, userXattr bool) (*service, error) {
	client, err := newAuthClient(cfg)
	if err != nil {
		return nil, err
	}
	cri, err := newCRIService(cfg, client)
	if err != nil {
		return nil, err
	}
	regs := withHosts(cfg, client)
	snRoot := filepath.Join(cfg.Daemon.Root, "snapshotter")
	d := &service{cri: cri}
	fsys := snapshot.FileSystem(noIndexFS{})
	if cfg.Snapshotter.Lazy {
		if d.fs, d.keeper, err = newKeptFileSystem(ctx, cfg, regs, reg, userXattr); err != nil {
			return nil, err
		}
		fsys = lazyFS{d.fs}
	}
	opts := []snapshot.Opt{
		snapshot.WithRegisterer(reg),
		snapshot.WithMountTimeout(cfg.FUSE.MountTimeout.Duration),
		snapshot.WithMinLayerSize(cfg.Snapshotter.MinLayerSize),
		snapshot.WithUserXattr(userXattr),
	}
	if !cfg.Snapshotter.Lazy {
		opts = append(opts, snapshot.DisableLazy())
	}
	if cfg.Snapshotter.LocalUnpack {
		opts = append(opts, snapshot.WithUnpacker(unpack.New(regs.requests(), plainHTTPPolicy(cfg))))
	}
	if !cfg.BackgroundFetch.Enable {
		opts = append(opts, snapshot.WithCompletionOff())
	}
	if cfg.Snapshotter.AsyncRemove {
		opts = append(opts, snapshot.AsynchronousRemove())
	}
	if cfg.Snapshotter.AllowInvalidMountsOnRestart {
		opts = append(opts, snapshot.AllowInvalidMountsOnRestart())
	}
	if d.sn, err = snapshot.New(ctx, snRoot, fsys, opts...); err != nil {
		if d.fs != nil {
			d.fs.Close()
		}
		d.keeper.close()
		return nil, fmt.Errorf("start snapshotter: %w", err)
	}
	return d, nil
}

// overlayNeedsUserXattr detects, once, whether overlay mounts under root
// need "userxattr" (a user namespace). The answer goes to both the
// snapshotter, which adds the option, and the lazy file system, whose
// opaque directories must then answer "user.overlay.opaque": were the two
// to disagree, deleted directories of lower layers would show through.
func overlayNeedsUserXattr(ctx context.Context, root string) (bool, error) {
	// Detection looks at the file system root is on (tmpfs never takes
	// userxattr), so root must exist.
	if err := os.MkdirAll(root, 0o700); err != nil {
		return false, fmt.Errorf("create snapshotter root: %w", err)
	}
	need, err := overlayutils.NeedsUserXAttr(root)
	if err != nil {
		log.G(ctx).WithError(err).Warnf("cannot tell whether overlay needs userxattr; assuming %v", need)
	}
	return need, nil
}

// shutdown stops the daemon's components. With unmount (SIGINT), every
// lazy layer is unmounted and the file system closed, which stops
// background fetching and closes the span cache. Without (SIGTERM), mounts
// stay for the next start to take over (snapshot's restore): the file
// system is detached, which stops background fetching after its current
// step and closes the span cache, but unmounts nothing.
func (d *service) shutdown(ctx context.Context, unmount bool) error {
	errs := []error{d.cri.close()}
	if unmount {
		errs = append(errs, d.sn.UnmountAll(ctx))
		if d.fs != nil {
			errs = append(errs, d.fs.Close())
		}
	} else if d.fs != nil {
		errs = append(errs, d.fs.Detach())
	}
	errs = append(errs, d.sn.Close(), d.keeper.close())
	return errors.Join(errs...)
}

// newFileSystem returns the file system that mounts layers lazily (built by
// lazyfs, as for "ociseek mount"): zTOCs through index/discover and blobs
// through fs/remote, both through client. The range reads use it without
// the retry transport: fs/remote retries ranges itself, knowing partial
// progress, and a second layer under it multiplied the requests (6 per
// attempt against a failing registry), so that max_retries bounded nothing.
func newFileSystem(cfg *config.Config, regs registryAccess, reg prometheus.Registerer, userXattr bool, extra ...fs.Opt) (*fs.FS, error) {
	return lazyfs.New(lazyOptions(cfg, regs), append(fsOptions(cfg, reg, userXattr), extra...)...)
}

// lazyOptions turns the configuration into the values lazyfs builds the
// file system from.
func lazyOptions(cfg *config.Config, regs registryAccess) lazyfs.Options {
	// One plain-HTTP policy for every registry client of the daemon.
	plainHTTP := plainHTTPPolicy(cfg)
	o := lazyfs.Options{
		Root:           filepath.Join(cfg.Daemon.Root, "fs"),
		Discover:       discoverOptions(cfg, regs.requests(), plainHTTP),
		RangeClient:    regs.ranges(),
		PlainHTTP:      plainHTTP,
		Fetch:          fetchOptions(cfg.Fetch),
		DeferredVerify: cfg.Fetch.Verify == config.VerifyDeferred,
		CacheDir:       cmp.Or(cfg.Cache.Dir, filepath.Join(cfg.Daemon.Root, "cache")),
		Mount:          lazyfs.MountOptions{CacheTimeout: cfg.FUSE.CacheTimeout.Duration, Debug: cfg.FUSE.Debug},
	}
	if cfg.BackgroundFetch.Enable {
		o.Background = &lazyfs.BackgroundOptions{
			QuietPeriod:    cfg.BackgroundFetch.SilencePeriod.Duration,
			BytesPerSecond: float64(cfg.BackgroundFetch.MaxBytesPerSecond),
			RetryDelay:     cfg.BackgroundFetch.RetryDelay.Duration,
			MaxDeferral:    cfg.BackgroundFetch.MaxDeferral.Duration,
			StepTimeout:    cfg.BackgroundFetch.StepTimeout.Duration,
			Policy:         lazyfs.BackgroundPolicy(cfg.BackgroundFetch.Policy),
			Parallel:       cfg.BackgroundFetch.Parallel,
		}
	}
	return o
}

// discoverOptions turns [discovery] into index/discover's options; its
// repositories reach registries through client.
func discoverOptions(cfg *config.Config, client orasremote.Client, plainHTTP func(string) bool) discover.Options {
	return discover.Options{
		NewRepository: func(name string) (*orasremote.Repository, error) {
			repo, err := orasremote.NewRepository(name)
			if err != nil {
				return nil, err
			}
			repo.Client, repo.PlainHTTP = client, plainHTTP(repo.Reference.Registry)
			return repo, nil
		},
		IndexRepos:  cfg.Discovery.IndexRepositories,
		DisableV1:   !cfg.Discovery.V1,
		DisableV2:   !cfg.Discovery.V2,
		TTL:         cfg.Discovery.CacheTTL.Duration,
		NegativeTTL: cfg.Discovery.NegativeCacheTTL.Duration,
		// In the file 0 means no bound; to discover it means the default.
		V1Repos:        cfg.Discovery.V1Trusted,
		MaxZtocSize:    zeroIsNoBound(cfg.Discovery.MaxZtocBytes),
		MaxZtocEntries: int(zeroIsNoBound(cfg.Discovery.MaxZtocEntries)),
		MaxZtocSpans:   int(zeroIsNoBound(cfg.Discovery.MaxZtocSpans)),
		ZtocBudget:     zeroIsNoBound(cfg.Discovery.ZtocMemoryBudget),
	}
}

// fetchOptions turns [fetch] into fs/remote's range-read limits.
func fetchOptions(f config.Fetch) lazyfs.FetchOptions {
	// fs/remote reads a zero option as "its default"; in the file, zero
	// means none.
	maxRetries, minRate := f.MaxRetries, f.MinBytesPerSecond
	if maxRetries == 0 {
		maxRetries = -1
	}
	if minRate == 0 {
		minRate = -1
	}
	return lazyfs.FetchOptions{
		RequestTimeout: f.RequestTimeout.Duration,
		MaxRetries:     maxRetries,
		MinBackoff:     f.MinRetryWait.Duration,
		MaxBackoff:     f.MaxRetryWait.Duration,
		MaxRetryAfter:  f.MaxRetryAfter.Duration,
		MinRate:        minRate,
		RateWindow:     f.MinRateWindow.Duration,
	}
}

// withoutRetries returns client without its retry transport. The copy
// shares the token cache, the credentials and the connection pool.
func withoutRetries(client *auth.Client) *auth.Client {
	c := *client
	hc := *client.Client
	if rt, ok := hc.Transport.(*retry.Transport); ok {
		hc.Transport = rt.Base
	}
	c.Client = &hc
	return &c
}

// fsOptions are the lazy file system's options only the daemon sets.
func fsOptions(cfg *config.Config, reg prometheus.Registerer, userXattr bool) []fs.Opt {
	opts := []fs.Opt{
		fs.WithRegisterer(reg),
		fs.WithMountTimeout(cfg.FUSE.MountTimeout.Duration),
		fs.WithPassthrough(cfg.FUSE.Passthrough),
		fs.WithMaxFetches(cfg.Fetch.MaxConcurrency),
		fs.WithMemoryLimit(cfg.Fetch.MemoryLimit),
		fs.WithCacheOptions(cache.WithMaxBytes(cacheBytes(cfg.Cache.MaxBytes))),
	}
	if userXattr {
		opts = append(opts, fs.WithUserXattr())
	}
	return opts
}

// lazyFS is fs.FS as the snapshotter's FileSystem. An unpack without image
// labels (containerd running without snapshot annotations) counts as an
// image without an index: containerd pulls the layer, as it would without
// ociseek, rather than the daemon failing to unpack it.
type lazyFS struct{ *fs.FS }

// Mount implements snapshot.FileSystem.
func (l lazyFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	err := l.FS.Mount(ctx, mountpoint, labels)
	if errors.Is(err, fs.ErrNoLabels) {
		return fmt.Errorf("%w: %w", err, index.ErrNoIndex)
	}
	return err
}

// cacheBytes turns the configured cache bound into fs/cache's (0 there is
// not "no limit").
func cacheBytes(n int64) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return n
}

// zeroIsNoBound turns a configured bound, where 0 means none, into a
// discover option, where 0 means the default and a negative value none.
func zeroIsNoBound(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// noIndexFS is the FileSystem with lazy loading off: no image has an index.
type noIndexFS struct{}

func (noIndexFS) Mount(context.Context, string, map[string]string) error {
	return fmt.Errorf("lazy loading not built in: %w", index.ErrNoIndex)
}

func (noIndexFS) Check(context.Context, string, map[string]string) error {
	return fmt.Errorf("lazy loading not built in: %w", index.ErrNoIndex)
}

func (noIndexFS) Unmount(context.Context, string) error { return nil }

// newAuthClient is the one registry client of the daemon, shared by
// everything that talks to registries, so that tokens are cached once.
// Credentials come from the Docker config (cfg.Registry.DockerConfig, or
// the Docker default location) and its credential helpers.
func newAuthClient(cfg *config.Config) (*auth.Client, error) {
	open := func() (credentials.Store, error) {
		if cfg.Registry.DockerConfig != "" {
			return credentials.NewStore(cfg.Registry.DockerConfig, credentials.StoreOptions{})
		}
		return credentials.NewStoreFromDocker(credentials.StoreOptions{})
	}
	// Opened once now so that a malformed file stops the start with a
	// message, rather than every pull failing later.
	if _, err := open(); err != nil {
		return nil, fmt.Errorf("open registry credentials: %w", err)
	}
	return &auth.Client{
		// remote.NewTransport keeps enough idle connections for
		// fetch-ahead's parallel range reads (the default keeps two per
		// host, so every further request would dial again).
		// The retry transport is for discovery and unpack, which have no
		// retries of their own; lazy range reads use the client without it
		// (lazyOptions). Redirects from HTTPS to plain HTTP are refused for
		// all: they would send pre-signed URLs and layers in clear text.
		Client: &http.Client{
			Transport:     retry.NewTransport(remote.NewTransport()),
			CheckRedirect: remote.CheckRedirect,
		},
		Cache:      auth.NewCache(),
		Credential: freshCredentials(open),
		Header:     http.Header{"User-Agent": {"ociseek-snapshotter"}},
	}, nil
}

// freshCredentials looks credentials up in a store opened anew for each
// lookup. oras's file store reads the file once, but the daemon outlives
// many "docker login"s: a login after the start must count without a
// restart. Lookups are rare (on a registry's challenge; tokens and basic
// credentials are then cached by the auth client), so rereading a small
// file costs nothing that matters.
func freshCredentials(open func() (credentials.Store, error)) auth.CredentialFunc {
	return func(ctx context.Context, host string) (auth.Credential, error) {
		store, err := open()
		if err != nil {
			return auth.EmptyCredential, fmt.Errorf("open registry credentials: %w", err)
		}
		return credentials.Credential(store)(ctx, host)
	}
}

// plainHTTPPolicy says whether a host (host[:port]) is reached over HTTP:
// configured hosts and loopback addresses. Every registry client of the
// daemon (discovery, lazy blob reads, local unpack) uses it.
func plainHTTPPolicy(cfg *config.Config) func(host string) bool {
	plain := map[string]bool{}
	for _, h := range cfg.Registry.PlainHTTP {
		plain[h] = true
	}
	return func(host string) bool { return plain[host] || discover.DefaultPlainHTTP(host) }
}
