package span

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
)

// Benchmarks run against a real registry on 127.0.0.1 with 4 MiB spans
// (the reference default). Each iteration starts cold: a fresh cache and a
// fresh Manager. Figures are reported with baselines measured in the same
// run (b.ReportMetric), never as absolute pass/fail timings.

// freshManager returns a cold Manager (empty cache) for e.
func freshManager(b *testing.B, e *env, opts Options) *Manager {
	b.Helper()
	c, err := cache.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	opts.LayerDigest = e.dgst
	m, err := New(e.z, e.blob, c, opts)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// gunzipSeconds times a stdlib in-memory gunzip of the whole layer: the
// single-core baseline the lazy read is compared with.
func gunzipSeconds(b *testing.B, layer []byte) float64 {
	start := time.Now()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		b.Fatal(err)
	}
	return time.Since(start).Seconds()
}

// BenchmarkColdSmallFile reads one 2 KiB file cold, in strict mode (the
// baseline: a whole span) and in deferred mode (a prefix).
func BenchmarkColdSmallFile(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	e := newEnv(b, reg, smallFiles(6000, 2048), ztoc.DefaultSpanSize, nil)
	// The file a quarter of the way into span 1: past the start, inside
	// the part a prefix may serve.
	s1, _ := e.z.Span(1)
	var ent *ztoc.FileMetadata
	for i := range e.z.TOC {
		if e.z.TOC[i].UncompressedOffset >= s1.UncompressedStart+s1.UncompressedSize()/5 {
			ent = &e.z.TOC[i]
			break
		}
	}
	var strictT, deferT time.Duration
	var strictB, deferB int64
	for b.Loop() {
		for _, mode := range []VerifyMode{VerifyStrict, VerifyDeferred} {
			b.StopTimer()
			m := freshManager(b, e, Options{Verify: mode})
			before := e.blob.bytes.Load()
			b.StartTimer()
			start := time.Now()
			if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
				b.Fatal(err)
			}
			d, n := time.Since(start), e.blob.bytes.Load()-before
			b.StopTimer()
			m.Close()
			b.StartTimer()
			if mode == VerifyStrict {
				strictT, strictB = strictT+d, strictB+n
			} else {
				deferT, deferB = deferT+d, deferB+n
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(strictT.Microseconds())/1000/n, "strict-ms")
	b.ReportMetric(float64(deferT.Microseconds())/1000/n, "deferred-ms")
	b.ReportMetric(float64(strictB)/1024/n, "strict-KiB")
	b.ReportMetric(float64(deferB)/1024/n, "deferred-KiB")
	b.ReportMetric(float64(deferT)/float64(strictT), "deferred/strict-time")
	b.ReportMetric(float64(deferB)/float64(strictB), "deferred/strict-bytes")
}

// BenchmarkCold2000Files reads 2,000 small files cold, one after the
// other, against a stdlib gunzip of the whole layer in memory.
func BenchmarkCold2000Files(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	e := newEnv(b, reg, smallFiles(2000, 2048), ztoc.DefaultSpanSize, nil)
	var ents []*ztoc.FileMetadata
	for i := range e.z.TOC {
		ents = append(ents, &e.z.TOC[i])
	}
	for _, mode := range []VerifyMode{VerifyStrict, VerifyDeferred} {
		name := map[VerifyMode]string{VerifyStrict: "strict", VerifyDeferred: "deferred"}[mode]
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			var base float64
			for b.Loop() {
				b.StopTimer()
				m := freshManager(b, e, Options{Verify: mode})
				base += gunzipSeconds(b, e.layer)
				b.StartTimer()
				start := time.Now()
				for _, ent := range ents {
					if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
						b.Fatal(err)
					}
				}
				total += time.Since(start)
				b.StopTimer()
				m.Close()
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/2000files")
			b.ReportMetric(total.Seconds()/base, "x-vs-gunzip-whole-layer")
		})
	}
}

// BenchmarkSequential64MiB reads a 64 MiB file cold in 128 KiB reads (as
// FUSE delivers them), with and without fetch-ahead, against a stdlib
// gunzip of the same layer in memory. It also reports the heap peak.
func BenchmarkSequential64MiB(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	files := []testFile{{name: "big", data: fileContent(5, 64<<20)}}
	e := newEnv(b, reg, files, ztoc.DefaultSpanSize, nil)
	ent := e.entry(b, "big")
	for _, ahead := range []int{-1, 3} {
		name := map[int]string{-1: "no-ahead", 3: "ahead3"}[ahead]
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			var base float64
			var peak uint64
			for b.Loop() {
				b.StopTimer()
				m := freshManager(b, e, Options{FetchAhead: ahead})
				base += gunzipSeconds(b, e.layer)
				runtime.GC()
				b.StartTimer()
				start := time.Now()
				buf := make([]byte, 128<<10)
				for off := int64(0); off < ent.UncompressedSize; off += int64(len(buf)) {
					if _, err := m.ReadAt(context.Background(), buf, ent.UncompressedOffset+off); err != nil {
						b.Fatal(err)
					}
					if off%(8<<20) == 0 {
						var ms runtime.MemStats
						runtime.ReadMemStats(&ms)
						peak = max(peak, ms.HeapInuse)
					}
				}
				total += time.Since(start)
				b.StopTimer()
				m.Close()
				b.StartTimer()
			}
			mbps := float64(ent.UncompressedSize) / (1 << 20) / (total.Seconds() / float64(b.N))
			b.ReportMetric(mbps, "MB/s")
			b.ReportMetric(float64(ent.UncompressedSize)*float64(b.N)/(1<<20)/base, "gunzip-MB/s")
			b.ReportMetric(base/total.Seconds(), "x-vs-gunzip") // >1: faster than one core inflating locally
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// BenchmarkBackgroundVsDemand reads a 16 MiB file from a layer completed by
// the background pass and from one whose file was fetched on demand (both
// warm): spans are cached uncompressed either way, so the ratio should be
// about 1.
func BenchmarkBackgroundVsDemand(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	files := []testFile{{name: "f", data: fileContent(6, 16<<20)}}
	e := newEnv(b, reg, files, ztoc.DefaultSpanSize, nil)
	ent := e.entry(b, "f")
	bg := freshManager(b, e, Options{})
	defer bg.Close()
	for done := false; !done; {
		var err error
		if _, done, err = bg.FetchNext(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	demand := freshManager(b, e, Options{})
	defer demand.Close()
	if _, err := readFile(context.Background(), demand, ent, 128<<10); err != nil {
		b.Fatal(err)
	}
	var tBg, tDemand time.Duration
	for b.Loop() {
		for _, m := range []*Manager{bg, demand} {
			start := time.Now()
			if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
				b.Fatal(err)
			}
			if m == bg {
				tBg += time.Since(start)
			} else {
				tDemand += time.Since(start)
			}
		}
	}
	b.ReportMetric(float64(tBg)/float64(tDemand), "background/demand-time")
	b.ReportMetric(float64(16)/(tBg.Seconds()/float64(b.N)), "background-MB/s")
}
