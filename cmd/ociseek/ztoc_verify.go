package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ociseek/ociseek/ztoc"
)

const ztocVerifyHelp = `
Check the zTOC file ZTOC against the layer blob LAYER by reading the whole
layer once, from its first byte: every checkpoint (offsets and 32 KiB
window), every span digest, every TOC entry and both archive sizes must be
what the layer itself says. Span digests cover only compressed bytes, so
this is the check that catches a forged window or file list.

Prints a one-line summary and exits 0 when the zTOC matches; otherwise
prints what differs and exits non-zero.
`

func ztocVerifyCommand() command {
	return command{name: "verify", summary: "check a zTOC against its whole layer", run: runZtocVerify}
}

func runZtocVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ociseek ztoc verify", "--layer LAYER ZTOC", ztocVerifyHelp, stderr)
	layer := fs.String("layer", "", "the layer blob `FILE` the zTOC describes (required)")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *layer == "" {
		fs.Usage()
		return usagef("ztoc verify: --layer is required")
	}
	z, _, err := readZtocFile(pos[0])
	if err != nil {
		return fmt.Errorf("ztoc verify: %w", err)
	}
	if err := verifyLayerFile(ctx, *layer, z); err != nil {
		return fmt.Errorf("ztoc verify: %w", err)
	}
	fmt.Fprintf(stdout, "ok: %d entries, %d spans, checkpoints and TOC match the layer\n", len(z.TOC), z.NumSpans())
	return nil
}

// verifyLayerFile runs ztoc.VerifyStream over the layer file at path.
func verifyLayerFile(ctx context.Context, path string, z *ztoc.Ztoc) error {
	return streamLayerFile(ctx, path, z, nil)
}

// streamLayerFile runs ztoc.VerifyStream over the layer file at path,
// handing each verified span's bytes to onSpan (which may be nil).
func streamLayerFile(ctx context.Context, path string, z *ztoc.Ztoc, onSpan func(ztoc.SpanID, []byte) error) error {
	blob, err := os.Open(path)
	if err != nil {
		return err
	}
	defer blob.Close()
	if err := checkBlobSize(blob, z); err != nil {
		return err
	}
	if err := ztoc.VerifyStream(ctx, bufio.NewReaderSize(blob, 256<<10), z, onSpan); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
