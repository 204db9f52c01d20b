package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc"
)

const ztocBuildHelp = `
Build the zTOC of a layer blob (gzip or uncompressed tar) read from the file
LAYER ("-" reads standard input) and print the zTOC's digest (sha256:...).

The zTOC is written to LAYER.ztoc next to the layer unless -o names another
file ("-o -" writes it to standard output and the digest to standard error).
With the default span size and build tool identifier the zTOC is byte for
byte the one the AWS SOCI tooling makes for the same layer.
`

func ztocBuildCommand() command {
	return command{name: "build", summary: "build the zTOC of a layer blob", run: runZtocBuild}
}

func runZtocBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ociseek ztoc build", "[--span-size N] [-o FILE] LAYER", ztocBuildHelp, stderr)
	spanSize := fs.Int64("span-size", ztoc.DefaultSpanSize, "uncompressed bytes per span (a new span starts at the first deflate block boundary after this many)")
	out := fs.String("o", "", "write the zTOC to `FILE` (default LAYER.ztoc; - for standard output)")
	tool := fs.String("build-tool", ztoc.DefaultBuildToolIdentifier, "build tool identifier written into the zTOC")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *spanSize <= 0 {
		return usagef("ztoc build: --span-size must be positive, got %d", *spanSize)
	}
	layer, dest := pos[0], *out
	if dest == "" {
		if layer == "-" {
			return usagef("ztoc build: -o is needed when the layer comes from standard input")
		}
		dest = layer + ".ztoc"
	}
	z, err := buildFromFile(ctx, layer, ztoc.BuildOptions{SpanSize: *spanSize, BuildToolIdentifier: *tool})
	if err != nil {
		return err
	}
	b, err := ztoc.Marshal(z)
	if err != nil {
		return fmt.Errorf("ztoc build: encode: %w", err)
	}
	dgst := digest.FromBytes(b)
	if dest == "-" {
		if _, err := stdout.Write(b); err != nil {
			return fmt.Errorf("ztoc build: write zTOC: %w", err)
		}
		_, err = fmt.Fprintln(stderr, dgst)
		return err
	}
	if err := writeFileAtomic(dest, b); err != nil {
		return fmt.Errorf("ztoc build: %w", err)
	}
	_, err = fmt.Fprintln(stdout, dgst)
	return err
}

func buildFromFile(ctx context.Context, path string, opts ztoc.BuildOptions) (*ztoc.Ztoc, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("ztoc build: %w", err)
		}
		defer f.Close()
		r = f
	}
	z, err := ztoc.Build(ctx, r, opts)
	if err != nil {
		return nil, fmt.Errorf("ztoc build %s: %w", path, err)
	}
	return z, nil
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory and a rename, so an interrupted run never leaves half a zTOC.
func writeFileAtomic(path string, b []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	return os.Rename(tmp.Name(), path)
}
