package fs

import (
	"context"
	"fmt"

	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
)

// BlobOpener opens ranged access to a layer blob. A mount calls it once per
// layer, and Check again to re-resolve a broken connection (through
// remote.Live's Reprobe), so OpenBlob should reach the registry (a probe)
// rather than return a cached handle. l.Size is set (from the label, or
// else the zTOC) when OpenBlob is called. RemoteBlobs is the implementation
// over fs/remote.
type BlobOpener interface {
	OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error)
}

// RemoteBlobs opens layer blobs with fs/remote: ranged HTTP reads from the
// image's repository, with the blob's size and redirect target probed on
// open.
type RemoteBlobs struct {
	// Client sends the requests; an *auth.Client (oras) handles
	// credentials. Required.
	Client remote.Doer
	// PlainHTTP says whether a registry host ("host:port", as
	// registry.Reference.Host gives it) is reached over plain HTTP; nil
	// means HTTPS everywhere.
	PlainHTTP func(host string) bool
	// Options are the fetch knobs (timeouts, retries). Size and PlainHTTP
	// are set per blob.
	Options remote.Options
}

// OpenBlob implements BlobOpener. The image reference is parsed here, once,
// into the blob's registry.Reference; fs/remote takes the registry host
// from it (Host maps the "docker.io" name to Docker Hub's API host).
func (r RemoteBlobs) OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error) {
	ref, err := registry.ParseReference(l.ImageRef)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", l.ImageRef, err)
	}
	ref.Reference = l.LayerDigest.String()
	opts := r.Options
	opts.Size = l.Size
	opts.PlainHTTP = r.PlainHTTP != nil && r.PlainHTTP(ref.Host())
	b, err := remote.OpenReference(ctx, r.Client, ref, opts)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// openLive opens the blob of ref as the remote.Live a layer reads through:
// its re-probes (Check) open the blob anew with f.blobs.
func (f *FS) openLive(ctx context.Context, ref LayerRef) (*remote.Live, error) {
	open := func(ctx context.Context) (remote.RangeReader, error) {
		return f.blobs.OpenBlob(ctx, ref)
	}
	return remote.NewLive(ctx, open, f.fetchLimit)
}
