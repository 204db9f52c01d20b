package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/snapshot"
	"github.com/prometheus/client_golang/prometheus"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// This file is where the packages meet: configuration values become
// options, and each interface a package declares gets its implementation.
// Keep every such decision here.

// newSnapshotter builds the snapshotter under <root>/snapshotter.
func newSnapshotter(ctx context.Context, cfg *config.Config, reg prometheus.Registerer) (*snapshot.Snapshotter, error) {
	client, err := newAuthClient(cfg)
	if err != nil {
		return nil, err
	}
	fsys, err := newFileSystem(ctx, cfg, client, reg)
	if err != nil {
		return nil, err
	}
	opts := []snapshot.Opt{
		snapshot.WithRegisterer(reg),
		snapshot.WithMountTimeout(cfg.FUSE.MountTimeout.Duration),
	}
	if !cfg.Snapshotter.Lazy {
		opts = append(opts, snapshot.DisableLazy())
	}
	if cfg.Snapshotter.LocalUnpack {
		opts = append(opts, snapshot.WithUnpacker(newLayerUnpacker(cfg, client)))
	}
	if cfg.Snapshotter.AsyncRemove {
		opts = append(opts, snapshot.AsynchronousRemove())
	}
	if cfg.Snapshotter.AllowInvalidMountsOnRestart {
		opts = append(opts, snapshot.AllowInvalidMountsOnRestart())
	}
	sn, err := snapshot.New(ctx, filepath.Join(cfg.Daemon.Root, "snapshotter"), fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("start snapshotter: %w", err)
	}
	return sn, nil
}

// newFileSystem returns the FileSystem that mounts layers lazily.
//
// Placeholder until the fs package is wired in: it reports every image as
// unindexed, so every layer takes the overlay path and containerd pulls it.
// Replace the body with fs.New(...) (span cache under cfg.Cache, discovery
// from cfg.Discovery, registry access through client, metrics on reg).
func newFileSystem(context.Context, *config.Config, *auth.Client, prometheus.Registerer) (snapshot.FileSystem, error) {
	return noIndexFS{}, nil
}

// noIndexFS is the placeholder FileSystem: no image has an index.
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
// the Docker default location).
func newAuthClient(cfg *config.Config) (*auth.Client, error) {
	opts := credentials.StoreOptions{}
	var (
		store credentials.Store
		err   error
	)
	if cfg.Registry.DockerConfig != "" {
		store, err = credentials.NewStore(cfg.Registry.DockerConfig, opts)
	} else {
		store, err = credentials.NewStoreFromDocker(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("open registry credentials: %w", err)
	}
	return &auth.Client{
		Client:     retry.DefaultClient,
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {"ociseek-snapshotter"}},
	}, nil
}

// newLayerUnpacker builds the local-unpack path's unpacker.
func newLayerUnpacker(cfg *config.Config, client *auth.Client) *layerUnpacker {
	plain := map[string]bool{}
	for _, h := range cfg.Registry.PlainHTTP {
		plain[h] = true
	}
	return &layerUnpacker{client: client, plainHTTP: plain}
}
