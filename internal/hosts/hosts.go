// Package hosts applies containerd's registry host configuration to every
// registry request of ociseek, so that a node's mirrors, pull-through
// caches, peer-to-peer distributors (Spegel, Dragonfly, Kraken) and private
// CAs serve lazy loading exactly as they serve containerd's pulls.
//
// Concepts:
//   - The configuration is containerd's own: the directory containerd's
//     config_path names (default /etc/containerd/certs.d), with
//     <host>/hosts.toml (":port" written "_port_") or _default/hosts.toml,
//     or Docker's certs.d layout of .crt/.cert/.key files. It is parsed by
//     containerd's core/remotes/docker/config (ConfigureHosts), never by a
//     parser of ours, so every key means what it means to containerd:
//     server, [host."..."] in file order, capabilities, ca, client,
//     skip_verify, override_path, header, dial_timeout. A registry without a
//     directory (and no _default) is reached at its own address, unchanged.
//   - A Client sits above oras' auth.Client: a request addressed to the
//     upstream registry ("https://reg/v2/<repo>/...") is sent to each
//     configured host in turn that has the capability the request needs
//     (blob or manifest by digest: pull; manifest by tag: pull and resolve;
//     referrers: referrers, else resolve; tag list: resolve; any write: the
//     first push host only), rewritten to that host's scheme, address and
//     path, with its headers and containerd's "ns" query parameter. The
//     auth client below thus sees the real host: tokens and credentials are
//     looked up and cached per mirror, as containerd does.
//   - Fall-over: a host that fails (transport error, any 4xx or 5xx answer)
//     hands the request to the next one, and the last one (the upstream, or
//     the "server" of hosts.toml) answers whatever it answers. A host that
//     fails as a host (transport error, 5xx, a body cut short, no answer
//     within Options.HeaderTimeout while others remain) is skipped
//     for Options.Cooldown, so that retries of a range read that broke
//     mid-way on a mirror go straight to the next host. A 404 or 401 is a
//     fact about one blob or repository and skips nothing.
//   - Transports: Hosts.Transport is the bottom of the client stack. It
//     sends each request through the transport of the host it was
//     rewritten for (carried in the request's context): ours
//     (Options.NewTransport, tuned for parallel range reads), with the TLS
//     settings (ca, client pairs, skip_verify) and dialer (dial_timeout)
//     containerd built for that host. Redirects and token requests of a
//     host's request use its transport too, as with containerd.
//   - The directory is read again when a registry's host directory changes
//     (its files' names, sizes and times, looked at every Options.Recheck),
//     so a node operator's edit applies without a restart.
//
// Hazards: a configured host is trusted as much as the registry itself:
// bytes are verified above (fs/span, the unpacker), not here. A "ca" or
// client file outside the host's directory is reread only when that
// directory changes.
package hosts

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/ociseek/ociseek/internal/redact"
)

// DefaultDir is containerd's default config_path.
const DefaultDir = "/etc/containerd/certs.d"

// dockerHubAPI is the address Docker Hub's registry API answers at; the
// image name says "docker.io", and so does containerd's host directory.
const dockerHubAPI = "registry-1.docker.io"

// Options configure a Hosts. The zero value reads no configuration.
type Options struct {
	// Dir is the host configuration directory (containerd's
	// config_path). Empty, or a directory that does not exist, means no
	// configuration: every request goes to the registry it names.
	Dir string
	// NewTransport returns a fresh transport with ociseek's tuning; each
	// host with its own TLS settings gets one, with those settings. Nil:
	// clones of http.DefaultTransport.
	NewTransport func() *http.Transport
	// Base carries the requests of hosts without TLS settings or a
	// dial_timeout of their own, and of registries without configuration
	// (nil: one transport from NewTransport).
	Base http.RoundTripper
	// Cooldown is how long a host that failed as a host is skipped
	// (default 30s).
	Cooldown time.Duration
	// HeaderTimeout bounds the wait for the headers of a host's answer,
	// for every host but the last (default 5s: half of fs/remote's default
	// rate window, so that a range read falls over within one attempt). A
	// mirror that accepts connections and never answers is then skipped
	// like a refused one.
	HeaderTimeout time.Duration
	// Recheck is how often a registry's host directory is looked at for
	// changes (default 5s).
	Recheck time.Duration
}

// Hosts holds the host configuration of every registry asked so far, the
// transports built for it, and which hosts failed recently. It is safe for
// concurrent use; one Hosts serves every client of a process.
type Hosts struct {
	opts Options
	// base is Options.Base behind a pointer of ours, so that load can
	// tell it from the transports containerd builds.
	base *baseTransport

	mu      sync.Mutex
	entries map[entryKey]*entry
	benched map[string]time.Time // endpoint id -> skipped until
}

// entryKey names one registry's configuration: the request's scheme is
// part of it, because a registry without a "server" key is reached the
// way ociseek would reach it without hosts.toml (HTTP for loopback and
// [registry] plain_http hosts).
type entryKey struct{ name, scheme string }

// entry is one registry's loaded configuration.
type entry struct {
	checked   time.Time
	dir       string // "" when the registry has none
	stamp     string // the directory's files, to notice edits
	endpoints []*endpoint
	err       error
}

// endpoint is one host a registry's requests may go to.
type endpoint struct {
	id           string // scheme://host/path, the key of its health
	scheme, host string
	path         string // API root: "/v2", or override_path's own
	caps         docker.HostCapabilities
	header       http.Header
	transport    http.RoundTripper // nil: Hosts.base
	proxy        bool              // not the registry itself: add "ns"
	server       bool              // the last host: never skipped
}

// New returns a Hosts reading opts.Dir.
func New(opts Options) *Hosts {
	opts.Cooldown = cmp.Or(opts.Cooldown, 30*time.Second)
	opts.Recheck = cmp.Or(opts.Recheck, 5*time.Second)
	opts.HeaderTimeout = cmp.Or(opts.HeaderTimeout, 5*time.Second)
	if opts.NewTransport == nil {
		opts.NewTransport = func() *http.Transport {
			if t, ok := http.DefaultTransport.(*http.Transport); ok {
				return t.Clone()
			}
			return &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
	}
	base := opts.Base
	if base == nil {
		base = opts.NewTransport()
	}
	return &Hosts{
		opts:    opts,
		base:    &baseTransport{base},
		entries: map[entryKey]*entry{},
		benched: map[string]time.Time{},
	}
}

// Dir returns the configuration directory.
func (h *Hosts) Dir() string { return h.opts.Dir }

// registryName is the name containerd looks a registry up by, for the
// address a request is sent to.
func registryName(apiHost string) string {
	if apiHost == dockerHubAPI {
		return "docker.io"
	}
	return apiHost
}

// lookup returns the hosts of the registry named name, for requests that
// would go to it over scheme; nil when it has no configuration.
func (h *Hosts) lookup(ctx context.Context, name, scheme string) ([]*endpoint, error) {
	if h.opts.Dir == "" {
		return nil, nil
	}
	key := entryKey{name, scheme}
	now := time.Now()
	h.mu.Lock()
	e := h.entries[key]
	if e != nil && now.Sub(e.checked) < h.opts.Recheck {
		h.mu.Unlock()
		return e.endpoints, e.err
	}
	h.mu.Unlock()

	dir, stamp, err := h.stamp(name)
	if err == nil && e != nil && dir == e.dir && stamp == e.stamp {
		h.mu.Lock()
		e.checked = now
		h.mu.Unlock()
		return e.endpoints, e.err
	}
	ne := &entry{checked: now, dir: dir, stamp: stamp, err: err}
	if err == nil && dir != "" {
		ne.endpoints, ne.err = h.load(ctx, name, scheme, dir)
	}
	if ne.err != nil {
		ne.err = fmt.Errorf("registry host configuration of %s (%s): %w", name, cmp.Or(dir, h.opts.Dir), ne.err)
	}
	h.mu.Lock()
	old := h.entries[key]
	h.entries[key] = ne
	h.mu.Unlock()
	if old != nil {
		closeIdle(old.endpoints)
	}
	return ne.endpoints, ne.err
}

// stamp finds the host directory of name (as containerd does: its own,
// then _default) and describes its files, so that an edit is noticed.
func (h *Hosts) stamp(name string) (dir, stamp string, err error) {
	dir, err = config.HostDirFromRoot(h.opts.Dir)(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	for _, f := range files {
		fi, err := f.Info()
		if err != nil {
			continue // removed meanwhile; the next check sees the rest
		}
		fmt.Fprintf(&b, "%s %d %d\n", f.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return dir, b.String(), nil
}

// load parses dir with containerd's ConfigureHosts and turns its hosts
// into endpoints with our transports.
func (h *Hosts) load(ctx context.Context, name, scheme, dir string) ([]*endpoint, error) {
	shared := true
	configure := config.ConfigureHosts(ctx, config.HostOptions{
		HostDir:       func(string) (string, error) { return dir, nil },
		DefaultScheme: scheme,
		// ConfigureHosts calls this first for the client every host
		// without settings of its own shares, then for each host's own
		// client; the transport it holds then has the host's TLS settings
		// and dialer, which we move onto a transport of ours.
		UpdateClient: func(c *http.Client) error {
			if shared {
				shared = false
				c.Transport = h.base
				return nil
			}
			if t, ok := c.Transport.(*http.Transport); ok {
				c.Transport = h.tune(t)
			}
			return nil
		},
	})
	regs, err := configure(name)
	if err != nil {
		return nil, err
	}
	if len(regs) == 0 {
		return nil, errors.New("no hosts configured")
	}
	eps := make([]*endpoint, len(regs))
	for i, r := range regs {
		ep := &endpoint{
			id:     r.Scheme + "://" + r.Host + r.Path,
			scheme: r.Scheme, host: r.Host, path: strings.TrimSuffix(r.Path, "/"),
			caps: r.Capabilities, header: r.Header,
			proxy:  r.Host != name && !(name == "docker.io" && r.Host == dockerHubAPI),
			server: i == len(regs)-1,
		}
		if r.Client != nil && r.Client.Transport != nil {
			if b, ok := r.Client.Transport.(*baseTransport); !ok || b != h.base {
				ep.transport = r.Client.Transport
			}
		}
		eps[i] = ep
	}
	return eps, nil
}

// tune returns a transport of ours with the TLS settings and dialer of
// containerd's t.
func (h *Hosts) tune(t *http.Transport) *http.Transport {
	n := h.opts.NewTransport()
	if t.TLSClientConfig != nil {
		n.TLSClientConfig = t.TLSClientConfig.Clone()
	} else {
		n.TLSClientConfig = &tls.Config{}
	}
	if t.DialContext != nil {
		n.DialContext = t.DialContext
	}
	return n
}

// closeIdle lets the connections of replaced transports go.
func closeIdle(eps []*endpoint) {
	for _, ep := range eps {
		if c, ok := ep.transport.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

// bench records that ep failed as a host (why); it is skipped until the
// cooldown ends, which is logged once as a warning. The last host is never
// skipped, so it is not recorded.
func (h *Hosts) bench(ctx context.Context, ep *endpoint, why error) {
	if ep.server {
		return
	}
	now := time.Now()
	h.mu.Lock()
	until, was := h.benched[ep.id]
	h.benched[ep.id] = now.Add(h.opts.Cooldown)
	h.mu.Unlock()
	if !was || now.After(until) {
		log.G(ctx).WithError(redact.Error(why)).WithField("host", ep.id).
			Warnf("registry host failed; the next hosts serve its requests for %s", h.opts.Cooldown)
	}
}

// skipped says whether ep failed within its cooldown.
func (h *Hosts) skipped(ep *endpoint) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	until, ok := h.benched[ep.id]
	if ok && time.Now().After(until) {
		delete(h.benched, ep.id)
		return false
	}
	return ok
}

// Skipped returns the hosts ("scheme://host/path") skipped now because
// they failed within their cooldown, sorted; for diagnostics and tests.
func (h *Hosts) Skipped() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	now := time.Now()
	for id, until := range h.benched {
		if now.Before(until) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// hostDirName is the directory name containerd gives host ("host:port"
// becomes "host_port_").
func hostDirName(host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

// HostDir returns the directory under dir that holds host's hosts.toml,
// named as containerd names it ("127.0.0.1:5000" → "127.0.0.1_5000_").
func HostDir(dir, host string) string {
	return filepath.Join(dir, hostDirName(host))
}
