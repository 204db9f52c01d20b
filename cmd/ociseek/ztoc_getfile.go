package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ociseek/ociseek/ztoc"
)

const ztocGetFileHelp = `
Write the content of the file PATH of a layer to standard output (or to -o
FILE), reading only the spans of the layer blob that hold it, each checked
against the span digests in the zTOC file ZTOC.

Before reading, the whole layer is checked against the zTOC (see ztoc
verify): span digests alone do not cover the checkpoints' windows or the
file list, so a forged zTOC could otherwise make this print bytes that are
not in the layer.

PATH is the file's name in the layer (a leading "/" or "./" is ignored).
When the layer lists it more than once, the last entry wins, as on
extraction. Hardlinks are followed to the file they name; a symlink, a
directory or a device is an error.
`

func ztocGetFileCommand() command {
	return command{name: "get-file", summary: "print a file of a layer, reading only its spans", run: runZtocGetFile}
}

func runZtocGetFile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ociseek ztoc get-file", "--layer LAYER [-o FILE] ZTOC PATH", ztocGetFileHelp, stderr)
	layer := fs.String("layer", "", "the layer blob `FILE` the zTOC describes (required)")
	out := fs.String("o", "", "write the file to `FILE` instead of standard output")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	if *layer == "" {
		fs.Usage()
		return usagef("ztoc get-file: --layer is required")
	}
	z, _, err := readZtocFile(pos[0])
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	// The layer is a local file, so a full pass is cheap; it is what
	// proves the windows and TOC the reader trusts are the layer's own.
	if err := verifyLayerFile(ctx, *layer, z); err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	blob, err := os.Open(*layer)
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	defer blob.Close()
	if err := checkBlobSize(blob, z); err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	r, _, err := ztoc.NewReader(z, ztoc.NewFileFetcher(blob)).Open(ctx, pos[1])
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	if *out != "" {
		return copyToFile(*out, r)
	}
	if _, err := io.Copy(stdout, r); err != nil {
		return fmt.Errorf("ztoc get-file %s: %w", pos[1], err)
	}
	return nil
}

// checkBlobSize catches the commonest mistake (a zTOC given with the wrong
// layer) with a clear message before any span digest fails.
func checkBlobSize(blob *os.File, z *ztoc.Ztoc) error {
	fi, err := blob.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != z.CompressedArchiveSize {
		return fmt.Errorf("%s is %d bytes but the zTOC describes a %d-byte layer: wrong layer?",
			blob.Name(), fi.Size(), z.CompressedArchiveSize)
	}
	return nil
}

func copyToFile(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("ztoc get-file: write %s: %w", path, err)
	}
	return f.Close()
}
