package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/ociseek/ociseek/ztoc"
)

// maxZtocFileSize bounds the zTOC files the CLI reads; the codec refuses
// larger buffers anyway, this keeps a wrong path from filling memory first.
const maxZtocFileSize = 1 << 30

// ztocCommand groups the verbs that work on single zTOC files.
func ztocCommand() command {
	return command{
		name:    "ztoc",
		summary: "build, inspect, verify and read through zTOCs (build, info, verify, get-file)",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return dispatch(ctx, "ociseek ztoc", []command{
				ztocBuildCommand(), ztocInfoCommand(), ztocVerifyCommand(), ztocGetFileCommand(),
			}, args, stdout, stderr)
		},
	}
}

// readZtocFile reads and decodes the zTOC file at path, returning the raw
// bytes too (their digest identifies the zTOC).
func readZtocFile(path string) (*ztoc.Ztoc, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxZtocFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxZtocFileSize {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes, not a zTOC", path, maxZtocFileSize)
	}
	z, err := ztoc.Unmarshal(b)
	if err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return z, b, nil
}
