package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"

	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/ztoc"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// buildFlags are the zTOC and platform flags shared by create and convert.
type buildFlags struct {
	spanSize     int64
	minLayerSize int64
	platforms    stringList
	allPlatforms bool
}

func addBuildFlags(fs *flag.FlagSet) *buildFlags {
	b := &buildFlags{}
	fs.Int64Var(&b.spanSize, "span-size", ztoc.DefaultSpanSize, "zTOC span size in uncompressed `bytes`")
	fs.Int64Var(&b.minLayerSize, "min-layer-size", build.DefaultMinLayerSize,
		"skip layers whose compressed size is smaller than this many `bytes`")
	fs.Var(&b.platforms, "platform", "index the manifest of this `os/arch[/variant]` (repeatable; default: the host's, or the image's only one)")
	fs.BoolVar(&b.allPlatforms, "all-platforms", false, "index every platform of the image")
	return b
}

// options turns the flags into build.Options, with progress on stdout when
// it is a terminal.
func (b *buildFlags) options(stdout io.Writer) (build.Options, error) {
	if b.spanSize <= 0 {
		return build.Options{}, usagef("--span-size must be positive")
	}
	if b.minLayerSize < 0 {
		return build.Options{}, usagef("--min-layer-size must not be negative")
	}
	ps, err := build.ParsePlatforms(b.platforms)
	if err != nil {
		return build.Options{}, usagef("--platform: %v", err)
	}
	return build.Options{
		SpanSize:     b.spanSize,
		MinLayerSize: b.minLayerSize,
		Platforms:    ps,
		AllPlatforms: b.allPlatforms,
		Progress:     progressFunc(stdout),
	}, nil
}

const createDescription = `
Builds a v1 SOCI index for the image REF (host/repo:tag or host/repo@digest)
and pushes it, with the image manifest as subject, to the image's repository
or to --index-repo. Layers are streamed from the registry into the zTOC
builder: nothing is pulled to disk and memory does not grow with layer size.
Each layer's digest is verified on the way; a mismatch fails the create.

On registries without the OCI referrers API the index is listed in the
sha256-<hex> fallback tag; concurrent creates for one image all end up
listed there (each merges its entry back until it holds).

Prints one line per indexed platform: index digest, platform, zTOC count.`

func createCommand() command {
	return command{
		name:    "create",
		summary: "build a v1 SOCI index for an image in a registry and push it",
		run:     runCreate,
	}
}

func runCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("create", "[flags] REF", createDescription, stderr)
	bf := addBuildFlags(fs)
	rf := addRegistryFlags(fs)
	indexRepo := fs.String("index-repo", "", "push the index to this `host/repo` instead of the image's repository")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	opts, err := bf.options(stdout)
	if err != nil {
		return err
	}
	image, ref, err := rf.repository(pos[0])
	if err != nil {
		return err
	}
	if ref == "" {
		ref = "latest"
	}
	var dst registry.Repository // nil: the image's repository
	if *indexRepo != "" {
		r, _, err := rf.repository(*indexRepo)
		if err != nil {
			return err
		}
		dst = r
	}
	results, err := build.Create(ctx, image, ref, dst, build.CreateOptions{Options: opts})
	if err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(stdout, "%s\t%s\t%d zTOCs\n", r.Index.Digest, platformOf(r.Manifest), len(r.Ztocs))
	}
	return nil
}

// platformOf formats a manifest descriptor's platform, "-" when unknown.
func platformOf(d ocispec.Descriptor) string {
	if d.Platform == nil {
		return "-"
	}
	return platforms.Format(*d.Platform)
}
