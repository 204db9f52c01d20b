package main

import (
	"net/http"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/internal/hosts"
)

// registryAccess is how the daemon reaches registries: its one auth
// client (credentials, the token cache) under containerd's registry host
// configuration ([registry] config_path), so that discovery, lazy range
// reads and local unpack all use the node's mirrors, CAs and client
// certificates, as containerd's own pulls do.
type registryAccess struct {
	auth  *auth.Client
	hosts *hosts.Hosts
}

// withHosts puts the host configuration around client. The transport at
// the bottom of client becomes the hosts' router, which sends a request
// rewritten for a configured host through that host's transport (ours,
// with its TLS settings) and any other through the transport newAuthClient
// chose; oras' retry layer stays where it was. client is changed in place,
// so this must run before anything copies it (withoutRetries does).
func withHosts(cfg *config.Config, client *auth.Client) registryAccess {
	hc := *client.Client
	base := hc.Transport
	rt, retrying := base.(*retry.Transport)
	if retrying {
		base = rt.Base
	}
	h := hosts.New(hosts.Options{Dir: cfg.Registry.ConfigPath, NewTransport: remote.NewTransport, Base: base})
	var bottom http.RoundTripper = h.Transport()
	if retrying {
		r := *rt
		r.Base = bottom
		bottom = &r
	}
	hc.Transport = bottom
	client.Client = &hc
	return registryAccess{auth: client, hosts: h}
}

// requests is the client of discovery and local unpack, which have no
// retries of their own: through the hosts, with oras' retry transport.
func (r registryAccess) requests() hosts.Doer { return r.hosts.Client(r.auth) }

// ranges is the client of lazy range reads: through the same hosts (their
// failures shared, so a range that broke on a mirror resumes on the next
// host), without the retry transport: fs/remote retries each range itself.
func (r registryAccess) ranges() hosts.Doer { return r.hosts.Client(withoutRetries(r.auth)) }
