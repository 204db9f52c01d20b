package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/cmd/internal/lazyfs"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/index/discover"
)

const mountDescription = `
Mounts one layer of the image REF (host/repo:tag or host/repo@digest) at
MOUNTPOINT, an existing empty directory, and serves it lazily until
interrupted (SIGINT or SIGTERM), then unmounts it. The layer's zTOC is found
the way the snapshotter finds it (SOCI v2 annotation, referrers API,
sha256-<hex> fallback tag, or --index); file bytes are fetched from the
registry when read, verified against the zTOC's span digests.

For inspection and debugging: what a container would see of the layer, and
what reading it costs. Needs root (or CAP_SYS_ADMIN) and /dev/fuse. The
mount is nosuid and nodev (setuid bits and device nodes of the layer grant
nothing) and only the mounting user can read it, unless --allow-other.`

func mountCommand() command {
	return command{
		name:    "mount",
		summary: "mount one layer of an image lazily (foreground, for inspection)",
		run:     runMount,
	}
}

// mountFlags are the knobs of "ociseek mount" beyond the registry flags.
type mountFlags struct {
	index      string
	cacheDir   string
	deferred   bool
	background bool
	debug      bool
	allowOther bool
}

func runMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("mount", "[flags] REF LAYER_DIGEST MOUNTPOINT", mountDescription, stderr)
	rf := addRegistryFlags(flags)
	var mf mountFlags
	flags.StringVar(&mf.index, "index", "", "use the SOCI index with this `digest` instead of discovering one")
	flags.StringVar(&mf.cacheDir, "cache-dir", "", "keep fetched spans in `DIR` (default: a temporary directory removed on exit)")
	flags.BoolVar(&mf.deferred, "deferred-verify", false, "answer small reads from unverified span prefixes (verified later; see fs/span)")
	flags.BoolVar(&mf.background, "background", false, "fetch the whole layer in the background while mounted")
	flags.BoolVar(&mf.debug, "debug", false, "log every FUSE request to stderr")
	flags.BoolVar(&mf.allowOther, "allow-other", false, "let users other than the one mounting read the layer (allow_other; setuid bits and devices stay inert)")
	pos, err := parseArgs(flags, args, 3)
	if err != nil {
		return err
	}
	layerDigest, err := digest.Parse(pos[1])
	if err != nil {
		return usagef("LAYER_DIGEST %q: %v", pos[1], err)
	}
	var indexDigest digest.Digest
	if mf.index != "" {
		if indexDigest, err = digest.Parse(mf.index); err != nil {
			return usagef("--index %q: %v", mf.index, err)
		}
	}
	ref, err := findLayer(ctx, rf, pos[0], layerDigest)
	if err != nil {
		return err
	}
	ref.IndexDigest = indexDigest
	return mountAndServe(ctx, rf, mf, ref, pos[2], stdout)
}

// findLayer resolves image to the image manifest that lists layer (any
// platform of an image index) and returns the LayerRef naming it.
func findLayer(ctx context.Context, rf *registryFlags, image string, layer digest.Digest) (fs.LayerRef, error) {
	repo, tagOrDigest, err := rf.repository(image)
	if err != nil {
		return fs.LayerRef{}, err
	}
	if tagOrDigest == "" {
		tagOrDigest = "latest"
	}
	manifests, err := build.ImageManifests(ctx, repo, tagOrDigest)
	if err != nil {
		return fs.LayerRef{}, fmt.Errorf("resolve %s: %w", image, err)
	}
	for _, md := range manifests {
		if md.Size > build.MaxManifestBytes {
			return fs.LayerRef{}, fmt.Errorf("manifest %s of %s: %d bytes, more than %d", md.Digest, image, md.Size, build.MaxManifestBytes)
		}
		b, err := content.FetchAll(ctx, repo, md)
		if err != nil {
			return fs.LayerRef{}, fmt.Errorf("fetch manifest %s of %s: %w", md.Digest, image, err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return fs.LayerRef{}, fmt.Errorf("decode manifest %s of %s: %w", md.Digest, image, err)
		}
		for _, l := range m.Layers {
			if l.Digest == layer {
				named := registry.Reference{Registry: repo.Reference.Registry,
					Repository: repo.Reference.Repository, Reference: md.Digest.String()}
				return fs.LayerRef{ImageRef: named.String(), ManifestDigest: md.Digest,
					LayerDigest: layer, Size: l.Size}, nil
			}
		}
	}
	return fs.LayerRef{}, fmt.Errorf("%s is not a layer of %s (%d image manifests searched)", layer, image, len(manifests))
}

// mountAndServe mounts ref at mountpoint and keeps it mounted until ctx
// ends; the unmount and cleanup run on a context of their own.
func mountAndServe(ctx context.Context, rf *registryFlags, mf mountFlags, ref fs.LayerRef, mountpoint string, stdout io.Writer) (err error) {
	root, err := os.MkdirTemp("", "ociseek-mount-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(root); rerr != nil && err == nil {
			err = rerr
		}
	}()
	fsys, err := newMountFS(rf, mf, root)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := fsys.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := fsys.MountLayer(ctx, mountpoint, ref); err != nil {
		return err
	}
	st, err := fsys.Status(mountpoint)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mounted %s (%d entries, %d bytes compressed) of %s at %s; interrupt to unmount\n",
		ref.LayerDigest, st.Entries, st.Total, ref.ImageRef, mountpoint)
	<-ctx.Done()
	st, _ = fsys.Status(mountpoint)
	if err := fsys.Unmount(context.WithoutCancel(ctx), mountpoint); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unmounted %s; fetched %d of %d bytes\n", mountpoint, st.Fetched, st.Total)
	return nil
}

// newMountFS builds the file system of one CLI mount with lazyfs, as the
// daemon builds its own: discovery through index/discover, blobs through
// fs/remote, both with the CLI's credentials, the range reads without
// retries of the client's own (fs/remote retries each range).
func newMountFS(rf *registryFlags, mf mountFlags, root string) (*fs.FS, error) {
	client, err := rf.authClient()
	if err != nil {
		return nil, err
	}
	o := lazyfs.Options{
		Root:           root,
		Discover:       discover.Options{NewRepository: rf.factory},
		RangeClient:    rf.hosts().Client(withoutRetries(client)),
		PlainHTTP:      rf.plainHTTPFor,
		DeferredVerify: mf.deferred,
		CacheDir:       mf.cacheDir,
		Mount:          layerMountOptions(mf),
	}
	if mf.background {
		o.Background = &lazyfs.BackgroundOptions{}
	}
	return lazyfs.New(o)
}

// layerMountOptions are the FUSE options of a CLI mount: always nosuid and
// nodev, and allow_other only with --allow-other. The daemon's mounts honour
// setuid bits and devices because containers run from them; here nothing
// does, and a setuid-root file of an untrusted image run from the
// mountpoint would give whoever runs it root.
func layerMountOptions(mf mountFlags) lazyfs.MountOptions {
	return lazyfs.MountOptions{Debug: mf.debug, NoSetuid: true, OwnerOnly: !mf.allowOther}
}
