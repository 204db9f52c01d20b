// Package lazyfs builds the lazy file system (package fs) over zTOC
// discovery (index/discover) and ranged blob reads (fs/remote): the one
// place where fs and the index packages meet, shared by the daemon
// (cmd/ociseek-snapshotter) and "ociseek mount" (cmd/ociseek).
//
// fs may not import index packages, so it declares the ZtocSource it needs;
// this package supplies it, together with the choices that follow from
// that meeting (a zTOC rejected before is reported as
// index.ErrZtocRejected). The binaries pass plain values: their own
// registry client, their discovery options and the few fs knobs they set;
// turning a configuration file or flags into those values stays with each
// binary. The types of those knobs are named here (aliases of the fs
// subpackages' own types), so that the CLI needs to import no fs subpackage.
package lazyfs

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/fs/layer"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/discover"
	"github.com/ociseek/ociseek/ztoc"
)

// FetchOptions are the range-read knobs (timeouts, retries, minimum rate)
// of fs/remote.
type FetchOptions = remote.Options

// BackgroundOptions are the background completion knobs of fs/bgfetch.
type BackgroundOptions = bgfetch.Options

// BackgroundPolicy is when fs/bgfetch completes layers ("idle" or
// "full-speed").
type BackgroundPolicy = bgfetch.Policy

// MountOptions are the FUSE mount knobs of fs/layer.
type MountOptions = layer.MountOptions

// Options are the plain values the lazy file system is built from. A zero
// field keeps the fs packages' default unless its comment says otherwise.
type Options struct {
	// Root holds the file system's own state (mount records). Required.
	Root string
	// Discover configures zTOC discovery; NewRepository is required.
	Discover discover.Options
	// RangeClient sends the ranged blob reads. It must not retry:
	// fs/remote retries each range itself, with a budget that knows the
	// partial progress, and a retrying transport under it multiplies the
	// requests. Required.
	RangeClient remote.Doer
	// PlainHTTP says which registry hosts blob reads reach over HTTP (nil:
	// none); Discover.NewRepository decides it for discovery, and callers
	// should pass the same policy to both.
	PlainHTTP func(host string) bool
	// Fetch are the range-read knobs.
	Fetch FetchOptions
	// DeferredVerify answers small reads from span prefixes verified later
	// (span.VerifyDeferred); off, every span is verified before any byte
	// of it is returned.
	DeferredVerify bool
	// CacheDir keeps fetched spans; "" is fs's default, under Root.
	CacheDir string
	// Background, when not nil, completes mounted layers in the background
	// with these knobs; nil leaves layers to foreground reads.
	Background *BackgroundOptions
	// Mount are the FUSE mount knobs of every layer.
	Mount MountOptions
}

// New returns the lazy file system o describes. extra are applied after
// the options o gives, for knobs only one binary sets (metrics, timeouts,
// cache bounds).
func New(o Options, extra ...fs.Opt) (*fs.FS, error) {
	if o.RangeClient == nil || o.Discover.NewRepository == nil {
		return nil, errors.New("start lazy file system: a range-read client and a repository factory are required")
	}
	verify := span.VerifyStrict
	if o.DeferredVerify {
		verify = span.VerifyDeferred
	}
	opts := []fs.Opt{
		// One buffer pool for the spans of every layer: reusing buffers
		// saves the page faults and zeroing of a fresh span each time.
		fs.WithSpanOptions(span.Options{Verify: verify, Buffers: span.NewBufferPool()}),
		fs.WithMountOptions(o.Mount),
		// A layer whose zTOC failed verification before is not mounted
		// from it again; the snapshotter reads the sentinel and unpacks
		// the layer instead (ztoc-rejected).
		fs.WithRejectedError(index.ErrZtocRejected),
	}
	if o.CacheDir != "" {
		opts = append(opts, fs.WithCacheDir(o.CacheDir))
	}
	if o.Background != nil {
		opts = append(opts, fs.WithBackgroundFetch(*o.Background))
	}
	fsys, err := fs.New(o.Root, ztocSource{discover.New(o.Discover)}, o.Blobs(), append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("start lazy file system: %w", err)
	}
	return fsys, nil
}

// Blobs is the blob opener New gives the file system: fs/remote range reads
// through RangeClient.
func (o Options) Blobs() fs.RemoteBlobs {
	return fs.RemoteBlobs{Client: o.RangeClient, PlainHTTP: o.PlainHTTP, Options: o.Fetch}
}

// ztocSource adapts index/discover to fs.ZtocSource.
type ztocSource struct{ d *discover.Discoverer }

// Lookup implements fs.ZtocSource.
func (s ztocSource) Lookup(ctx context.Context, l fs.LayerRef) (*ztoc.Ztoc, error) {
	return s.d.LayerZtoc(ctx, l.ImageRef, l.ManifestDigest, l.IndexDigest, l.LayerDigest)
}

// CheckRedirect is the redirect policy of registry clients (fs/remote's):
// Go's default limit, and no redirect from HTTPS to plain HTTP.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	return remote.CheckRedirect(req, via)
}
