package gzipx

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// benchPayloadSize is the size of the tar-like data the benchmarks inflate.
const benchPayloadSize = 64 << 20

// benchFile writes the level-6 gzip of the benchmark payload to a temporary
// file (so that gzip -dc reads the very same bytes) and returns its contents
// and path.
func benchFile(b *testing.B) ([]byte, string) {
	b.Helper()
	z := gzipStd(b, payload(benchPayloadSize, 42), 6)
	path := filepath.Join(b.TempDir(), "payload.tar.gz")
	if err := os.WriteFile(path, z, 0o644); err != nil {
		b.Fatal(err)
	}
	return z, path
}

// timeIt returns the best of n runs of f, which keeps the comparison fair on
// a machine shared with other work.
func timeIt(b *testing.B, n int, f func() error) time.Duration {
	b.Helper()
	best := time.Duration(1<<63 - 1)
	for range n {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	return best
}

func inflateOurs(z []byte) error {
	_, err := io.Copy(io.Discard, NewInflater(bytes.NewReader(z)))
	return err
}

func inflateStd(z []byte) error {
	r, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, r)
	return err
}

// BenchmarkInflate measures the Inflater on ~64 MiB of tar-like data (gzip
// level 6) and reports its speed relative to compress/gzip and to GNU
// gzip -dc, both measured in the same run on the same bytes.
func BenchmarkInflate(b *testing.B) {
	z, path := benchFile(b)
	b.SetBytes(benchPayloadSize)
	b.ResetTimer()
	for b.Loop() {
		if err := inflateOurs(z); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ours := timeIt(b, 3, func() error { return inflateOurs(z) })
	std := timeIt(b, 3, func() error { return inflateStd(z) })
	b.ReportMetric(float64(ours)/float64(std), "x-vs-stdlib")
	gz, err := exec.LookPath("gzip")
	if err != nil {
		b.Logf("no gzip command, x-vs-gzip-dc not measured: %v", err)
		return
	}
	// Output goes straight to /dev/null (no pipe), gzip's best case.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	ext := timeIt(b, 3, func() error {
		cmd := exec.Command(gz, "-dc", path)
		cmd.Stdout = null
		return cmd.Run()
	})
	b.ReportMetric(float64(ours)/float64(ext), "x-vs-gzip-dc")
}
