package ztoc

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ociseek/ociseek/ztoc/gzipx"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// BenchmarkVerifyStream measures VerifyStream over a generated ~64 MiB
// (uncompressed) gzip layer and reports its time relative to plain gzip
// decompression (compress/gzip, what `gzip -dc` does) of the same layer,
// timed in the same iterations so both see the same machine load:
// x-gzip-dc. x-gzipx is the same ratio against this package's own
// inflater alone, i.e. what the checks cost on top of inflating. ns/op
// covers all three passes.
func BenchmarkVerifyStream(b *testing.B) {
	var files []ztoctest.File
	for i := range 256 {
		files = append(files, ztoctest.File{Name: fmt.Sprintf("d/f%03d", i), Mode: 0o644, Body: ztoctest.Content(uint64(i), 256<<10)})
	}
	layer := ztoctest.Layer(b, files, ztoctest.LayerOptions{Gzip: true})
	z, err := Build(context.Background(), bytes.NewReader(layer), BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(z.UncompressedArchiveSize)
	var verify, stdgz, own time.Duration
	for b.Loop() {
		start := time.Now()
		zr, err := gzip.NewReader(bytes.NewReader(layer))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
		stdgz += time.Since(start)

		start = time.Now()
		if _, err := io.Copy(io.Discard, gzipx.NewInflater(bytes.NewReader(layer))); err != nil {
			b.Fatal(err)
		}
		own += time.Since(start)

		start = time.Now()
		if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, nil); err != nil {
			b.Fatal(err)
		}
		verify += time.Since(start)
	}
	b.ReportMetric(float64(verify)/float64(stdgz), "x-gzip-dc")
	b.ReportMetric(float64(verify)/float64(own), "x-gzipx")
}
