package ztoc

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// benchLayerVersion keys the cached benchmark layer; change it when the
// generator changes.
const benchLayerVersion = "v1"

// benchLayer returns the path of a ≥ 200 MB gzip (level 6) layer of mixed
// random and compressible files, generated once and cached under
// os.TempDir() across runs.
func benchLayer(b *testing.B) string {
	b.Helper()
	path := filepath.Join(os.TempDir(), "ociseek-bench-layer-"+benchLayerVersion+".tar.gz")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp, err := os.CreateTemp(os.TempDir(), "ociseek-bench-layer-*.tmp")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	if err := writeBenchLayer(tmp, 200<<20); err != nil {
		b.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		b.Fatal(err)
	}
	return path
}

// writeBenchLayer writes a tar.gz with files of 1 KiB–4 MiB, about half of
// them random and half text-like, until the compressed size reaches target.
func writeBenchLayer(w io.Writer, target int64) error {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, 6)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"layer ", "span ", "checkpoint ", "container ", "the ", "of ", "image ", "lazy ",
		"snapshot ", "registry ", "0123456789 ", "\n", "func ", "return ", "error ", "{}\n"}
	buf := make([]byte, 4<<20)
	for i := 0; cw.n < target; i++ {
		size := 1<<10 + rng.IntN(4<<20)
		data := buf[:size]
		if i%2 == 0 {
			for j := 0; j+8 <= len(data); j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					data[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			for j := 0; j < len(data); {
				j += copy(data[j:], words[rng.IntN(len(words))])
			}
		}
		hdr := &tar.Header{Name: fmt.Sprintf("data/%03d/file-%06d", i%100, i), Mode: 0o644, Size: int64(size),
			ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
		if err := zw.Flush(); err != nil && i%64 == 0 { // keep cw.n current now and then
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BenchmarkBuild times Build over the benchmark layer and `gzip -dc` over
// the same file in the same run, and reports their ratio (target ≤ 1.3):
// x-vs-gzip-dc compares wall-clock times (Build may use both cores),
// cpu-x-vs-gzip-dc compares CPU times, steadier on a busy machine.
func BenchmarkBuild(b *testing.B) {
	path := benchLayer(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	gzipPath, err := exec.LookPath("gzip")
	if err != nil {
		b.Skip("gzip not installed: no baseline to compare with")
	}
	b.SetBytes(fi.Size())
	var build, baseline, buildCPU, baselineCPU time.Duration
	for b.Loop() {
		wall, cpu := timeGzipDC(b, gzipPath, path)
		baseline, baselineCPU = baseline+wall, baselineCPU+cpu
		start, startCPU := time.Now(), processCPU(b)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Build(context.Background(), f, BuildOptions{}); err != nil {
			b.Fatal(err)
		}
		f.Close()
		build, buildCPU = build+time.Since(start), buildCPU+processCPU(b)-startCPU
	}
	b.ReportMetric(float64(build)/float64(baseline), "x-vs-gzip-dc")
	b.ReportMetric(float64(buildCPU)/float64(baselineCPU), "cpu-x-vs-gzip-dc")
}

// processCPU returns the user+system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeGzipDC runs gzip -dc on path and returns its wall and CPU times.
func timeGzipDC(b *testing.B, gzipPath, path string) (wall, cpu time.Duration) {
	b.Helper()
	cmd := exec.Command(gzipPath, "-dc", path)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("gzip -dc: %v", err)
	}
	return time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// BenchmarkReadSpan measures InflateSpan throughput (uncompressed MB/s) on
// 4 MiB spans of the benchmark layer, their compressed bytes in memory. The
// spans used start on a byte boundary, so that the standard library's
// compress/flate can inflate the same spans from the same windows: its
// time in the same run is the baseline of "x-vs-stdlib-flate".
func BenchmarkReadSpan(b *testing.B) {
	path := benchLayer(b)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	z := layerBenchZtoc(b, path)
	var spans []Span
	var compressed [][]byte
	for i := 0; i < z.NumSpans()-1 && len(spans) < 8; i++ {
		s, err := z.Span(SpanID(i))
		if err != nil {
			b.Fatal(err)
		}
		if s.Checkpoint.Bits != 0 {
			continue
		}
		c, err := fetchSpan(context.Background(), NewFileFetcher(f), s)
		if err != nil {
			b.Fatal(err)
		}
		spans, compressed = append(spans, s), append(compressed, c)
	}
	if len(spans) == 0 {
		b.Skip("no byte-aligned span in the benchmark layer")
	}
	var ours, stdlib time.Duration
	var inflated int64
	i := 0
	for b.Loop() {
		start := time.Now()
		if _, err := z.InflateSpan(spans[i].ID, compressed[i]); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		fr := flate.NewReaderDict(bytes.NewReader(compressed[i]), spans[i].Checkpoint.Window)
		if _, err := io.ReadFull(fr, make([]byte, spans[i].UncompressedSize())); err != nil {
			b.Fatalf("stdlib flate on span %d: %v", spans[i].ID, err)
		}
		ours, stdlib = ours+mid.Sub(start), stdlib+time.Since(mid)
		inflated += spans[i].UncompressedSize()
		i = (i + 1) % len(spans)
	}
	// ns/op counts both inflaters; these two metrics separate them.
	b.ReportMetric(float64(inflated)/1e6/ours.Seconds(), "inflate-MB/s")
	b.ReportMetric(float64(ours)/float64(stdlib), "x-vs-stdlib-flate")
}

// layerBenchZtoc builds (once, cached next to the layer) the layer's zTOC with
// the default 4 MiB spans.
func layerBenchZtoc(b *testing.B, layer string) *Ztoc {
	b.Helper()
	path := layer + ".ztoc"
	if buf, err := os.ReadFile(path); err == nil {
		if z, err := Unmarshal(buf); err == nil {
			return z
		}
	}
	f, err := os.Open(layer)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	z, err := Build(context.Background(), f, BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if buf, err := Marshal(z); err == nil {
		_ = os.WriteFile(path, buf, 0o644) // a cache: failing to write it only costs time
	}
	return z
}
