package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/index/discover"
)

// indexCommand groups the verbs that inspect and delete SOCI indices in a
// registry.
func indexCommand() command {
	return command{
		name:    "index",
		summary: "list, inspect and remove SOCI indices in a registry (ls, info, rm)",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return dispatch(ctx, "ociseek index", []command{
				{name: "ls", summary: "list every SOCI index of an image and how it was found", run: runIndexLs},
				{name: "info", summary: "show one SOCI index", run: runIndexInfo},
				{name: "rm", summary: "delete a SOCI index and its fallback-tag entry", run: runIndexRm},
			}, args, stdout, stderr)
		},
	}
}

// listedIndex is one line of `index ls`; the JSON field names are part of
// the CLI's contract.
type listedIndex struct {
	Digest       digest.Digest `json:"digest"`
	FoundBy      string        `json:"found_by"`
	ArtifactType string        `json:"artifact_type"`
	SpanSize     int64         `json:"span_size,omitempty"`
	Ztocs        int           `json:"ztocs"`
	Manifest     digest.Digest `json:"manifest"`
	Platform     string        `json:"platform"`
	Repository   string        `json:"repository"`
	Error        string        `json:"error,omitempty"`
}

const indexLsDescription = `
Lists every SOCI index found for the image REF (every platform of a
multi-platform image): the v2 index named by the image manifest's
annotation, and v1 indices listed by the referrers API and the sha256-<hex>
fallback tag. found_by is v2-annotation, referrers-api or fallback-tag.`

func runIndexLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("index ls", "[--json] REF", indexLsDescription, stderr)
	asJSON := fs.Bool("json", false, "print a JSON array")
	rf := addRegistryFlags(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	repo, ref, err := rf.repository(pos[0])
	if err != nil {
		return err
	}
	if ref == "" {
		ref = "latest"
	}
	manifests, err := build.ImageManifests(ctx, repo, ref)
	if err != nil {
		return err
	}
	d := discover.New(discover.Options{NewRepository: rf.factory, NegativeTTL: -1})
	name := repo.Reference.Registry + "/" + repo.Reference.Repository
	out := []listedIndex{}
	for _, m := range manifests {
		found, err := d.List(ctx, name, m.Digest)
		if err != nil {
			return fmt.Errorf("list SOCI indices of %s (%s): %w", m.Digest, platformOf(m), err)
		}
		for _, f := range found {
			out = append(out, describeFound(ctx, rf, m, f))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tFOUND BY\tARTIFACT TYPE\tZTOCS\tSPAN SIZE\tPLATFORM")
	for _, l := range out {
		ztocs := fmt.Sprint(l.Ztocs)
		if l.Error != "" {
			ztocs = "error: " + l.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", l.Digest, l.FoundBy, l.ArtifactType, ztocs, l.SpanSize, l.Platform)
	}
	return tw.Flush()
}

// describeFound fetches a found index to count its zTOCs. A listed index
// that cannot be fetched (a dangling fallback-tag entry) is still shown,
// with the error, since finding such entries is what ls is for.
func describeFound(ctx context.Context, rf *registryFlags, m ocispec.Descriptor, f discover.Found) listedIndex {
	l := listedIndex{Digest: f.Descriptor.Digest, FoundBy: string(f.Method), ArtifactType: f.Descriptor.ArtifactType,
		Manifest: m.Digest, Platform: platformOf(m), Repository: f.Repository}
	repo, _, err := rf.repository(f.Repository)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	idx, _, err := build.FetchIndex(ctx, repo, f.Descriptor.Digest)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	l.ArtifactType = idx.Version().ArtifactType()
	l.Ztocs = len(idx.Ztocs())
	l.SpanSize = build.SpanSize(idx)
	return l
}

// indexInfo is the JSON form of `index info`.
type indexInfo struct {
	Digest       digest.Digest       `json:"digest"`
	Size         int64               `json:"size"`
	ArtifactType string              `json:"artifact_type"`
	Subject      *ocispec.Descriptor `json:"subject,omitempty"`
	BuildTool    string              `json:"build_tool,omitempty"`
	Ztocs        []ztocInfo          `json:"ztocs"`
}

type ztocInfo struct {
	Digest         digest.Digest `json:"digest"`
	Size           int64         `json:"size"`
	LayerDigest    string        `json:"layer_digest"`
	LayerMediaType string        `json:"layer_media_type,omitempty"`
	SpanSize       string        `json:"span_size,omitempty"`
}

func runIndexInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("index info", "--repo REF [--json] DIGEST",
		"Shows the SOCI index DIGEST stored in the repository of REF: version, subject and zTOCs.", stderr)
	repoRef := fs.String("repo", "", "the image or repository `REF` (host/repo[:tag]) holding the index")
	asJSON := fs.Bool("json", false, "print JSON")
	rf := addRegistryFlags(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *repoRef == "" {
		return usagef("index info: --repo is required")
	}
	repo, _, err := rf.repository(*repoRef)
	if err != nil {
		return err
	}
	idx, desc, err := build.FetchIndex(ctx, repo, digest.Digest(pos[0]))
	if err != nil {
		return err
	}
	info := indexInfo{Digest: desc.Digest, Size: desc.Size, ArtifactType: desc.ArtifactType,
		Subject: idx.Manifest.Subject, BuildTool: idx.Manifest.Annotations[index.AnnotationBuildToolIdentifier], Ztocs: []ztocInfo{}}
	for _, z := range idx.Ztocs() {
		info.Ztocs = append(info.Ztocs, ztocInfo{Digest: z.Digest, Size: z.Size,
			LayerDigest: z.Annotations[index.AnnotationLayerDigest], LayerMediaType: z.Annotations[index.AnnotationLayerMediaType],
			SpanSize: z.Annotations[index.AnnotationSpanSize]})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	printIndexInfo(stdout, info)
	return nil
}

func printIndexInfo(w io.Writer, info indexInfo) {
	fmt.Fprintf(w, "Digest:        %s\nSize:          %d\nArtifact type: %s\n", info.Digest, info.Size, info.ArtifactType)
	if info.Subject != nil {
		fmt.Fprintf(w, "Subject:       %s (%s)\n", info.Subject.Digest, info.Subject.MediaType)
	}
	if info.BuildTool != "" {
		fmt.Fprintf(w, "Build tool:    %s\n", info.BuildTool)
	}
	fmt.Fprintf(w, "zTOCs:         %d\n", len(info.Ztocs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  LAYER\tZTOC\tSIZE\tSPAN SIZE")
	for _, z := range info.Ztocs {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", z.LayerDigest, z.Digest, z.Size, z.SpanSize)
	}
	tw.Flush()
}

func runIndexRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("index rm", "REF DIGEST", `
Deletes the SOCI index manifest DIGEST from the repository of REF and takes
it out of its subject's sha256-<hex> fallback tag, deleting the tag when it
becomes empty. zTOC blobs are left to the registry's garbage collection.`, stderr)
	rf := addRegistryFlags(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	repo, _, err := rf.repository(pos[0])
	if err != nil {
		return err
	}
	res, err := build.Remove(ctx, repo, digest.Digest(pos[1]), build.PublishOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed %s\n", res.Index.Digest)
	if res.Subject != nil {
		tag := build.FallbackTag(res.Subject.Digest)
		switch {
		case res.TagDeleted:
			fmt.Fprintf(stdout, "deleted fallback tag %s (it listed nothing else)\n", tag)
		case res.TagUpdated:
			fmt.Fprintf(stdout, "removed it from fallback tag %s\n", tag)
		}
	}
	return nil
}
