package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"net/http"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"

	"github.com/ociseek/ociseek/cmd/internal/lazyfs"
	"github.com/ociseek/ociseek/internal/hosts"
)

// addHostsFlag registers --hosts-dir, containerd's registry host
// configuration directory (ctr's and nerdctl's flag of the same name).
func (r *registryFlags) addHostsFlag(fs *flag.FlagSet) {
	fs.StringVar(&r.hostsDir, "hosts-dir", hosts.DefaultDir,
		"containerd's registry host configuration `DIR` (<host>/hosts.toml, _default/hosts.toml): mirrors, CAs and client certificates for every registry request; \"\" or a missing directory: none")
}

// hosts returns the host configuration of this command, made once so that
// every repository of a run shares its transports and knows which hosts
// failed. Hosts without TLS settings of their own use the transport of
// --skip-verify and --insecure-registry.
func (r *registryFlags) hosts() *hosts.Hosts {
	if r.hostsCfg == nil {
		r.hostsCfg = hosts.New(hosts.Options{
			Dir:  r.hostsDir,
			Base: r.transport(),
		})
	}
	return r.hostsCfg
}

// httpClient is the HTTP client under the CLI's auth client, over t. It
// refuses redirects from HTTPS to plain HTTP (pre-signed URLs and layers
// would travel in clear text), as the daemon's does: fs/remote cannot add
// that rule to a client under the host configuration's.
func (r *registryFlags) httpClient(t http.RoundTripper) *http.Client {
	return &http.Client{Transport: t, CheckRedirect: lazyfs.CheckRedirect}
}

// withHostsDir returns registries, the host lookup of "ociseek pull"'s
// containerd resolver, with --hosts-dir applied as ctr applies it: a
// registry with a host directory gets containerd's ConfigureHosts (its
// mirrors, CAs and client certificates), the others registries' own.
func (r *registryFlags) withHostsDir(ctx context.Context, registries docker.RegistryHosts, creds func(string) (string, string, error)) docker.RegistryHosts {
	if r.hostsDir == "" {
		return registries
	}
	hostDir := config.HostDirFromRoot(r.hostsDir)
	return func(host string) ([]docker.RegistryHost, error) {
		if _, err := hostDir(host); errors.Is(err, errdefs.ErrNotFound) {
			return registries(host)
		} else if err != nil {
			return nil, err
		}
		opts := config.HostOptions{HostDir: hostDir, Credentials: creds, DefaultScheme: "https"}
		if r.plainHTTPFor(host) {
			opts.DefaultScheme = "http"
		}
		if r.skipVerify || r.insecure {
			opts.DefaultTLS = &tls.Config{InsecureSkipVerify: true}
		}
		return config.ConfigureHosts(ctx, opts)(host)
	}
}
