package span

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/gzipx"
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

// smallFileTarget returns the TOC entry of a file a fifth of the way into
// span 1: past the span's start, so a prefix must be inflated to reach it.
func smallFileTarget(e *env) *ztoc.FileMetadata {
	s1, _ := e.z.Span(1)
	for i := range e.z.TOC {
		if e.z.TOC[i].UncompressedOffset >= s1.UncompressedStart+s1.UncompressedSize()/5 {
			return &e.z.TOC[i]
		}
	}
	return nil
}

// wholeSpanRead is the reference's way to serve a small read, the
// baseline: fetch the whole span, then check its digest, then inflate it.
func wholeSpanRead(b *testing.B, e *env, id ztoc.SpanID) {
	buf, err := e.z.ReadSpan(context.Background(), e.remote, id)
	if err != nil || len(buf) == 0 {
		b.Fatalf("whole span read: %v", err)
	}
}

// roundTrip times a one-byte range request: the registry's latency floor.
func roundTrip(b *testing.B, e *env) time.Duration {
	start := time.Now()
	rc, err := e.remote.FetchRange(context.Background(), 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		b.Fatal(err)
	}
	rc.Close()
	return time.Since(start)
}

// BenchmarkColdSmallFile reads one 2 KiB file cold in strict and deferred
// mode, against two baselines timed in the same iteration: a one-byte
// range request (the registry round trip) and the reference's whole-span
// read (fetch, then verify, then inflate the span). Bytes are counted when
// the read returns (what the answer waited for) and, for deferred mode,
// once the span's verification finished (what the read cost in the end).
func BenchmarkColdSmallFile(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	e := newEnv(b, reg, smallFiles(6000, 2048), ztoc.DefaultSpanSize, nil)
	ent := smallFileTarget(e)
	id := e.z.SpanOf(ent.UncompressedOffset)
	// One buffer pool for every Manager, as a daemon shares one among its
	// layers: "cold" is about the layer's bytes, not the process.
	pool := NewBufferPool()
	var rtt, whole time.Duration
	var t [2]time.Duration // per mode
	var n [2]int64
	var deferTotal int64
	for b.Loop() {
		rtt += roundTrip(b, e)
		start := time.Now()
		wholeSpanRead(b, e, id)
		whole += time.Since(start)
		for i, mode := range []VerifyMode{VerifyStrict, VerifyDeferred} {
			m := freshManager(b, e, Options{Verify: mode, Buffers: pool})
			before := e.blob.bytes.Load()
			start := time.Now()
			if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
				b.Fatal(err)
			}
			t[i] += time.Since(start)
			n[i] += e.blob.bytes.Load() - before
			if err := m.fetchSpan(context.Background(), id, ReasonDemand); err != nil {
				b.Fatal(err) // waits for the flight to verify the span
			}
			if mode == VerifyDeferred {
				deferTotal += e.blob.bytes.Load() - before
			}
			m.Close()
		}
	}
	k := float64(b.N)
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / k }
	b.ReportMetric(ms(t[0]), "strict-ms")
	b.ReportMetric(ms(t[1]), "deferred-ms")
	b.ReportMetric(ms(rtt), "rtt-ms")
	b.ReportMetric(ms(whole), "whole-span-ms")
	b.ReportMetric(float64(t[0])/float64(whole), "strict/whole-span")
	b.ReportMetric(float64(t[1])/float64(whole), "deferred/whole-span")
	b.ReportMetric(float64(n[0])/1024/k, "strict-KiB")
	b.ReportMetric(float64(n[1])/1024/k, "deferred-KiB")
	b.ReportMetric(float64(deferTotal)/1024/k, "deferred-total-KiB")
}

// BenchmarkSmallReadStages times, one after the other, the stages a cold
// small read of span 1 is made of, to show where its time goes: the
// registry round trip, the transfer of the whole compressed span, its
// sha256, inflating up to the file (what a read must wait for) and the
// whole span (what the flight does after releasing it), and the cache
// write (after release too). A strict read costs about rtt + transfer (the
// hash and inflate run alongside); a deferred one about rtt + the prefix's
// transfer and inflate.
func BenchmarkSmallReadStages(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	e := newEnv(b, reg, smallFiles(6000, 2048), ztoc.DefaultSpanSize, nil)
	ent := smallFileTarget(e)
	id := e.z.SpanOf(ent.UncompressedOffset)
	s, _ := e.z.Span(id)
	need := ent.UncompressedOffset + ent.UncompressedSize - s.UncompressedStart
	var rtt, transfer, hash, inflNeed, inflAll, put time.Duration
	for b.Loop() {
		rtt += roundTrip(b, e)
		t := time.Now()
		rc, err := e.remote.FetchRange(context.Background(), s.CompressedStart, s.CompressedEnd)
		if err != nil {
			b.Fatal(err)
		}
		comp, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			b.Fatal(err)
		}
		transfer += time.Since(t)
		t = time.Now()
		if err := ztoc.VerifySpan(s, comp); err != nil {
			b.Fatal(err)
		}
		hash += time.Since(t)
		t = time.Now()
		r, err := gzipx.NewResumeReader(bytes.NewReader(comp), s.Checkpoint.Bits, s.Checkpoint.Window)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, need)); err != nil {
			b.Fatal(err)
		}
		inflNeed += time.Since(t)
		t = time.Now()
		data, err := e.z.InflateSpan(id, comp)
		if err != nil {
			b.Fatal(err)
		}
		inflAll += time.Since(t)
		t = time.Now()
		if err := e.cache.Put("stage", data); err != nil {
			b.Fatal(err)
		}
		put += time.Since(t)
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(b.N) }
	b.ReportMetric(ms(rtt), "rtt-ms")
	b.ReportMetric(ms(transfer), "transfer-ms")
	b.ReportMetric(ms(hash), "sha256-ms")
	b.ReportMetric(ms(inflNeed), "inflate-to-file-ms")
	b.ReportMetric(ms(inflAll), "inflate-span-ms")
	b.ReportMetric(ms(put), "cache-put-ms")
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
	pool := NewBufferPool() // shared, as in a daemon
	for _, mode := range []VerifyMode{VerifyStrict, VerifyDeferred} {
		name := map[VerifyMode]string{VerifyStrict: "strict", VerifyDeferred: "deferred"}[mode]
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			var base float64
			for b.Loop() {
				b.StopTimer()
				m := freshManager(b, e, Options{Verify: mode, Buffers: pool})
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

// gzipDecompress times `gzip -dc` of the layer from a local file: the
// single-core native baseline a cold lazy read is compared with (the stdlib
// in memory when gzip is missing).
func gzipDecompress(b *testing.B, path string, layer []byte) time.Duration {
	if _, err := exec.LookPath("gzip"); err != nil {
		return time.Duration(gunzipSeconds(b, layer) * float64(time.Second))
	}
	start := time.Now()
	cmd := exec.Command("gzip", "-dc", path)
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		b.Fatalf("gzip -dc: %v", err)
	}
	return time.Since(start)
}

// cpuTime returns the CPU time (user+system) this process has used and
// its minor page faults so far.
func cpuTime(b *testing.B) (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt
}

// BenchmarkSequential64MiB reads a 64 MiB file cold in 128 KiB reads (as
// FUSE delivers them), without fetch-ahead and with the default, from the
// loopback registry as it is and with 20 ms added to each request, against
// `gzip -dc` of the same layer from local disk timed in the same
// iteration. It also reports this process's CPU time per MiB (the
// registry's is not counted), which load on the machine disturbs less than
// wall time, and the heap held above what the test itself holds.
func BenchmarkSequential64MiB(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	files := []testFile{{name: "big", data: fileContent(5, 64<<20)}}
	e := newEnv(b, reg, files, ztoc.DefaultSpanSize, nil)
	ent := e.entry(b, "big")
	layerPath := filepath.Join(b.TempDir(), "layer.gz")
	if err := os.WriteFile(layerPath, e.layer, 0o600); err != nil {
		b.Fatal(err)
	}
	// One pool for every Manager, as a daemon shares one among its layers.
	pool := NewBufferPool()
	for _, v := range []struct {
		name  string
		ahead int
		rtt   time.Duration
	}{{"no-ahead", -1, 0}, {"ahead-default", 0, 0}, {"no-ahead-rtt20ms", -1, 20 * time.Millisecond}, {"ahead-default-rtt20ms", 0, 20 * time.Millisecond}} {
		ahead := v.ahead
		b.Run(v.name, func(b *testing.B) {
			var total, base, cpu time.Duration
			var faults int64
			for b.Loop() {
				m := freshManager(b, e, Options{FetchAhead: ahead, Buffers: pool})
				if v.rtt > 0 {
					m.blob = delayedBlob{BlobReader: m.blob, rtt: v.rtt}
				}
				base += gzipDecompress(b, layerPath, e.layer)
				cpu0, flt0 := cpuTime(b)
				start := time.Now()
				buf := make([]byte, 128<<10)
				for off := int64(0); off < ent.UncompressedSize; off += int64(len(buf)) {
					if _, err := m.ReadAt(context.Background(), buf, ent.UncompressedOffset+off); err != nil {
						b.Fatal(err)
					}
				}
				total += time.Since(start)
				cpu1, flt1 := cpuTime(b)
				cpu, faults = cpu+cpu1-cpu0, faults+flt1-flt0
				m.Close()
			}
			peak := liveHeapPeak(b, e, ent, Options{FetchAhead: ahead})
			mib := float64(ent.UncompressedSize) / (1 << 20) * float64(b.N)
			b.ReportMetric(mib/total.Seconds(), "MB/s")
			b.ReportMetric(mib/base.Seconds(), "gzip-dc-MB/s")
			b.ReportMetric(base.Seconds()/total.Seconds(), "x-vs-gzip-dc") // >1: faster than local gzip -dc
			b.ReportMetric(cpu.Seconds()*1000/mib, "cpu-ms/MiB")
			b.ReportMetric(float64(faults)/mib, "faults/MiB")
			b.ReportMetric(float64(peak)/(1<<20), "live-heap-MiB")
		})
	}
}

// delayedBlob adds a round trip time to every range request, as a
// registry across a WAN has (the loopback registry answers in well under a
// millisecond when the machine is idle).
type delayedBlob struct {
	BlobReader
	rtt time.Duration
}

func (d delayedBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	t := time.NewTimer(d.rtt)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return d.BlobReader.FetchRange(ctx, start, end)
}

// liveHeapPeak reads ent sequentially once more, untimed, collecting
// garbage in the middle of every span, and returns the most heap found
// live above what was live before: the buffers of flights, fetch-ahead and
// hot spans, which is what the read costs in memory.
func liveHeapPeak(b *testing.B, e *env, ent *ztoc.FileMetadata, opts Options) uint64 {
	m := freshManager(b, e, opts)
	defer m.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC() // twice: span buffers pooled by earlier runs are gone
	runtime.ReadMemStats(&ms)
	floor, peak := ms.HeapAlloc, uint64(0)
	buf := make([]byte, 128<<10)
	for off := int64(0); off < ent.UncompressedSize; off += int64(len(buf)) {
		if _, err := m.ReadAt(context.Background(), buf, ent.UncompressedOffset+off); err != nil {
			b.Fatal(err)
		}
		if off%ztoc.DefaultSpanSize == ztoc.DefaultSpanSize/2 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc-min(floor, ms.HeapAlloc))
		}
	}
	return peak
}

// BenchmarkBackgroundVsDemand reads a 16 MiB file from a layer completed by
// the background pass and from one whose file was fetched on demand (both
// warm): spans are cached uncompressed either way, so the ratio should be
// about 1. Both are read once before the timed reads, which then come from
// the page cache. Whichever of the two layers is prepared first reads back
// a few percent slower (page cache placement: swapping the order flipped a
// 1.15 ratio to 0.9), so each iteration prepares both afresh, in
// alternating order.
func BenchmarkBackgroundVsDemand(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	files := []testFile{{name: "f", data: fileContent(6, 16<<20)}}
	e := newEnv(b, reg, files, ztoc.DefaultSpanSize, nil)
	ent := e.entry(b, "f")
	// No spans kept in memory: both read from the span cache, which is
	// what a file read a while after its fetch does.
	completed := func() *Manager {
		m := freshManager(b, e, Options{HotSpans: -1})
		for done := false; !done; {
			var err error
			if _, done, err = m.FetchNext(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		return m
	}
	fetched := func() *Manager {
		m := freshManager(b, e, Options{HotSpans: -1})
		if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
			b.Fatal(err)
		}
		return m
	}
	// Reads alternate, several per iteration, and the medians are
	// compared: a load spike on a shared machine then hits neither side
	// more than the other.
	var tBg, tDemand []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		var bg, demand *Manager
		if i%2 == 0 {
			bg, demand = completed(), fetched()
		} else {
			demand, bg = fetched(), completed()
		}
		i++
		// One read of each first: the cache writes its values with direct
		// I/O, so the first read of either comes from the disk.
		for _, m := range []*Manager{bg, demand} {
			if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for r := range 4 {
			order := []*Manager{bg, demand}
			if r%2 == 1 {
				order = []*Manager{demand, bg}
			}
			for _, m := range order {
				start := time.Now()
				if _, err := readFile(context.Background(), m, ent, 128<<10); err != nil {
					b.Fatal(err)
				}
				if m == bg {
					tBg = append(tBg, time.Since(start))
				} else {
					tDemand = append(tDemand, time.Since(start))
				}
			}
		}
		bg.Close()
		demand.Close()
	}
	mBg, mDemand := median(tBg), median(tDemand)
	b.ReportMetric(float64(mBg)/float64(mDemand), "background/demand-time")
	b.ReportMetric(16/mBg.Seconds(), "background-MB/s")
	b.ReportMetric(16/mDemand.Seconds(), "demand-MB/s")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
