package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/ociseek/ociseek/internal/label"
)

const pullDescription = `
Pulls the image REF into containerd and unpacks it on the ociseek snapshotter,
with the snapshot labels the snapshotter needs to serve layers lazily (image
reference, manifest and layer digests, layer sizes), as nerdctl does for
--snapshotter soci. Afterwards 'ctr run --snapshotter soci REF ID' starts the
image without downloading its indexed layers.

Prints, for each layer, how the snapshotter served it (see 'ociseek explain').`

// containerdFlags are the flags of verbs that talk to containerd.
type containerdFlags struct {
	address     string
	namespace   string
	snapshotter string
}

// The environment variables ctr and nerdctl read for containerd's socket
// and namespace, so a shell set up for them works with ociseek as it is.
const (
	envContainerdAddress   = "CONTAINERD_ADDRESS"
	envContainerdNamespace = namespaces.NamespaceEnvVar
)

// defaultContainerdAddress is containerd's own default socket.
const defaultContainerdAddress = "/run/containerd/containerd.sock"

// addContainerdFlags registers --address/-a and --namespace/-n, whose
// defaults come from $CONTAINERD_ADDRESS and $CONTAINERD_NAMESPACE when
// set (a flag on the command line wins, as with ctr), and --snapshotter.
func addContainerdFlags(fs interface {
	StringVar(p *string, name, value, usage string)
}) *containerdFlags {
	c := &containerdFlags{}
	address := envOr(envContainerdAddress, defaultContainerdAddress)
	namespace := envOr(envContainerdNamespace, namespaces.Default)
	fs.StringVar(&c.address, "address", address, "containerd's gRPC `socket` ($"+envContainerdAddress+" sets the default)")
	fs.StringVar(&c.address, "a", address, "shorthand for --address")
	fs.StringVar(&c.namespace, "namespace", namespace, "containerd `namespace` ($"+envContainerdNamespace+" sets the default)")
	fs.StringVar(&c.namespace, "n", namespace, "shorthand for --namespace")
	fs.StringVar(&c.snapshotter, "snapshotter", "soci", "`name` of the ociseek proxy snapshotter in containerd's configuration")
	return c
}

// envOr returns the environment variable name, or def when it is unset or
// empty (an empty namespace or socket is never meant).
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// connect returns a containerd client and a context in the namespace.
func (c *containerdFlags) connect(ctx context.Context) (*containerd.Client, context.Context, error) {
	client, err := containerd.New(c.address, containerd.WithDefaultNamespace(c.namespace))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to containerd at %s: %w", c.address, err)
	}
	return client, namespaces.WithNamespace(ctx, c.namespace), nil
}

func pullCommand() command {
	return command{
		name:    "pull",
		summary: "pull an image into containerd for lazy loading by the ociseek snapshotter",
		run:     runPull,
	}
}

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pull", "[flags] REF", pullDescription, stderr)
	cf := addContainerdFlags(fs)
	rf := addRegistryFlags(fs)
	indexDigest := fs.String("soci-index-digest", "", "use this SOCI index `digest` instead of discovering one")
	platform := fs.String("platform", "", "pull this `os/arch[/variant]` (default: the host's)")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	ref := pos[0]
	client, ctx, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(newResolver(rf)),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(cf.snapshotter),
		containerd.WithImageHandlerWrapper(labelHandlerWrapper(ref, *indexDigest)),
	}
	if *platform != "" {
		opts = append(opts, containerd.WithPlatform(*platform))
	}
	img, err := client.Pull(ctx, ref, opts...)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	fmt.Fprintf(stdout, "pulled %s (%s) on snapshotter %s\n", img.Name(), img.Target().Digest, cf.snapshotter)
	return explainImage(ctx, client, img, cf.snapshotter, nil, stdout)
}

// labelHandlerWrapper adds to each layer descriptor the annotations the
// snapshotter receives as Prepare labels: containerd's cri.* set, then the
// SOCI ones nerdctl's SOCI handler adds (package label): the layer sizes
// and the optional index digest (the soci-snapshotter's remote-snapshot labels).
func labelHandlerWrapper(ref, indexDigest string) func(images.Handler) images.Handler {
	info := snapshotters.AppendInfoHandlerWrapper(ref)
	return func(h images.Handler) images.Handler {
		inner := info(h)
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			children, err := inner.Handle(ctx, desc)
			if err != nil || !images.IsManifestType(desc.MediaType) {
				return children, err
			}
			for i := range children {
				c := &children[i]
				if !images.IsLayerType(c.MediaType) {
					continue
				}
				c.Annotations[label.LayerSize] = strconv.FormatInt(c.Size, 10)
				digests := strings.Count(c.Annotations[snapshotters.TargetImageLayersLabel], ",") + 1
				c.Annotations[label.ImageLayersSize] = layerSizes(children[i:], digests)
				c.Annotations[label.IndexDigest] = indexDigest
			}
			return children, nil
		})
	}
}

// layerSizes lists the sizes of the first max layers among descs,
// comma-separated, as many as fit the label size limit. max is the number
// of digests containerd kept in cri.image-layers (it truncates that label
// to its size limit): readers such as AWS's soci-snapshotter refuse the
// labels when the two lists differ in length.
func layerSizes(descs []ocispec.Descriptor, max int) string {
	var b strings.Builder
	n := 0
	for _, d := range descs {
		if !images.IsLayerType(d.MediaType) {
			continue
		}
		if n == max {
			break
		}
		n++
		item := strconv.FormatInt(d.Size, 10)
		if b.Len() > 0 {
			item = "," + item
		}
		if labels.Validate(label.ImageLayersSize, b.String()+item) != nil {
			break
		}
		b.WriteString(item)
	}
	return b.String()
}

// newResolver returns a registry resolver with the CLI's credentials,
// talking plain HTTP to loopback registries (or all with --plain-http).
func newResolver(rf *registryFlags) remotes.Resolver {
	creds := func(host string) (string, string, error) {
		if rf.user != "" {
			user, pass, _ := strings.Cut(rf.user, ":")
			return user, pass, nil
		}
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return "", "", fmt.Errorf("read docker credentials: %w", err)
		}
		cred, err := store.Get(context.Background(), host)
		if err != nil {
			return "", "", fmt.Errorf("credentials for %s: %w", host, err)
		}
		if cred.RefreshToken != "" {
			return "", cred.RefreshToken, nil
		}
		return cred.Username, cred.Password, nil
	}
	authOpts := []docker.AuthorizerOpt{docker.WithAuthCreds(creds)}
	regOpts := []docker.RegistryOpt{docker.WithPlainHTTP(func(host string) (bool, error) { return rf.plainHTTPFor(host), nil })}
	if tr := rf.transport(); tr != nil {
		// --skip-verify, --insecure-registry: the token requests too.
		client := &http.Client{Transport: tr}
		authOpts = append(authOpts, docker.WithAuthClient(client))
		regOpts = append(regOpts, docker.WithClient(client))
	}
	hosts := rf.withHostsDir(context.Background(),
		docker.ConfigureDefaultRegistries(append(regOpts, docker.WithAuthorizer(docker.NewDockerAuthorizer(authOpts...)))...), creds)
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
}
