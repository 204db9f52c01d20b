package main

import (
	"context"
	"fmt"
	"io"

	"oras.land/oras-go/v2"

	"github.com/ociseek/ociseek/index/build"
)

const convertDescription = `
Writes a SOCI-enabled image (SOCI index v2) to DST made from the image SRC.
For each selected platform a v2 SOCI index is built, the image manifest is
re-written as an OCI manifest annotated with the index digest
(com.amazon.soci.index-digest), and a new OCI image index lists the original
entries plus one SOCI index entry per platform. Everything the new index
references is copied to DST; the DST tag is written last.

SRC and DST are each a registry reference (host/repo[:tag], SRC may use
@digest) or an OCI image layout directory, oci:PATH[:TAG]; a DST layout is
created when missing. For a layout without TAG, SRC must list a single
image and DST lists the result untagged.

Prints one line per converted platform (SOCI index digest, platform, zTOC
count), then the digest of the new image index.`

func convertCommand() command {
	return command{
		name:    "convert",
		summary: "write a SOCI-enabled (v2) copy of an image to a registry or OCI layout",
		run:     runConvert,
	}
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", "[flags] SRC DST", convertDescription, stderr)
	bf := addBuildFlags(fs)
	rf := addRegistryFlags(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	opts, err := bf.options(stdout)
	if err != nil {
		return err
	}
	src, srcRef, err := openTarget(rf, pos[0], false)
	if err != nil {
		return err
	}
	dst, dstRef, err := openTarget(rf, pos[1], true)
	if err != nil {
		return err
	}
	res, err := build.Convert(ctx, src, srcRef, dst, dstRef, opts)
	if err != nil {
		return err
	}
	for _, r := range res.Converted {
		fmt.Fprintf(stdout, "%s\t%s\t%d zTOCs\n", r.Index.Digest, platformOf(r.Manifest), len(r.Ztocs))
	}
	fmt.Fprintln(stdout, res.Index.Digest)
	return nil
}

// openTarget opens one side of a convert: an OCI layout ("oci:PATH[:TAG]",
// created when dst) or a registry repository; it returns the tag or digest
// to read or write. A registry destination needs a tag ("latest" by
// default); a layout's may be empty.
func openTarget(rf *registryFlags, s string, dst bool) (oras.Target, string, error) {
	if path, tag, ok := build.ParseLayoutRef(s); ok {
		if path == "" {
			return nil, "", usagef("%q: empty layout path", s)
		}
		l, err := build.OpenLayout(path, dst)
		if err != nil {
			return nil, "", err
		}
		return l, tag, nil
	}
	repo, ref, err := rf.repository(s)
	if err != nil {
		return nil, "", err
	}
	if ref == "" {
		ref = "latest"
	}
	if dst && repo.Reference.ValidateReferenceAsDigest() == nil {
		return nil, "", usagef("destination %q: give a tag, not a digest", s)
	}
	return repo, ref, nil
}
