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
FILE), as the zTOC file ZTOC places it in the layer file LAYER.

The file is taken from one pass over the whole layer that also checks it
against the zTOC (see ztoc verify): span digests alone do not cover the
checkpoints' windows or the file list, so a forged zTOC could otherwise
make this print bytes that are not in the layer. Nothing is written unless
the whole layer matches.

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
	entry, err := z.FileEntry(pos[1])
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	// The file's bytes are collected while the pass verifies the layer
	// and written out only once all of it matched.
	tmp, err := os.CreateTemp("", "ociseek-get-file-*")
	if err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := streamLayerFile(ctx, *layer, z, fileCollector(z, entry, tmp)); err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("ztoc get-file: %w", err)
	}
	if *out != "" {
		return copyToFile(*out, tmp)
	}
	if _, err := io.Copy(stdout, tmp); err != nil {
		return fmt.Errorf("ztoc get-file %s: %w", pos[1], err)
	}
	return nil
}

// fileCollector returns an onSpan for ztoc.VerifyStream that writes the
// bytes of entry's data found in each span to w.
func fileCollector(z *ztoc.Ztoc, entry *ztoc.FileMetadata, w io.Writer) func(ztoc.SpanID, []byte) error {
	start, end := entry.UncompressedOffset, entry.UncompressedOffset+entry.UncompressedSize
	return func(id ztoc.SpanID, data []byte) error {
		s, err := z.Span(id)
		if err != nil {
			return err
		}
		lo, hi := max(start, s.UncompressedStart), min(end, s.UncompressedStart+int64(len(data)))
		if lo >= hi {
			return nil
		}
		_, err = w.Write(data[lo-s.UncompressedStart : hi-s.UncompressedStart])
		return err
	}
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
