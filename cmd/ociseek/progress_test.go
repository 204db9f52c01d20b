package main

import (
	"bytes"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index/build"
)

// TestProgressQuietWhenPiped: output that is not a terminal gets no
// progress, only results.
func TestProgressQuietWhenPiped(t *testing.T) {
	if progressFunc(&bytes.Buffer{}) != nil {
		t.Error("progress enabled for a non-terminal writer")
	}
}

// TestProgressLines: a finished layer gets a line with its size and what
// happened to it; live updates redraw one line.
func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf}
	l := ocispec.Descriptor{Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 3 << 20}
	p.update(build.LayerProgress{Layer: l, Read: 1 << 20})
	p.update(build.LayerProgress{Layer: l, Read: 3 << 20, Done: true})
	p.update(build.LayerProgress{Layer: l, Done: true, Skipped: "zstd layer"})
	out := buf.String()
	for _, want := range []string{"sha256:0123456789ab", "1.0 MiB / 3.0 MiB", "3.0 MiB  zTOC built\n", "skipped: zstd layer\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output %q lacks %q", out, want)
		}
	}
}
