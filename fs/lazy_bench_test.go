package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/gzipx"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// The benchmarks of this file read through a real FUSE mount of a layer
// served by a real registry process on 127.0.0.1, with the reference's 4 MiB
// spans, each iteration on a fresh FS (empty span cache) and a fresh mount
// (no page cache): what a container's first reads cost. Every figure comes
// with a baseline measured in the same run.
//
// The reads are made by cat(1), another process, as a container's are. Made
// by this process, a read(2) blocked on the mount held one of the Go
// scheduler's two Ps until the runtime took it back, so the daemon side ran
// on one core for stretches (the 64 MiB read went 12 % faster with a third
// P); a container's reads never hold the daemon's Ps.

// benchFS returns a fresh FS (empty span cache), no background fetch, and
// the metrics registry its counters are on: the bytes fetched are read from
// its own ociseek_span_fetched_bytes_total, as an operator would. Its client
// has the daemon's transport (remote.NewTransport): Go's default one keeps
// two idle connections per host, so with more spans in flight every further
// range request paid for a new connection.
func benchFS(b *testing.B, img *image, verify span.VerifyMode) (*FS, *prometheus.Registry) {
	b.Helper()
	blobs := remoteBlobs()
	blobs.Client = &http.Client{Transport: remote.NewTransport()}
	reg := prometheus.NewRegistry()
	f, err := New(b.TempDir(), newSource(img), blobs, WithSpanOptions(span.Options{Verify: verify}), WithRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f, reg
}

// fetchedBytes sums ociseek_span_fetched_bytes_total over its reasons.
func fetchedBytes(b *testing.B, reg *prometheus.Registry) int64 {
	b.Helper()
	families, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range families {
		if mf.GetName() == "ociseek_span_fetched_bytes_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return int64(sum)
}

// closeFS closes f (unmounting its layer) at the end of an iteration, so
// that nothing of it (a mount, its timers) is left to run during the next.
func closeFS(b *testing.B, f *FS) {
	b.Helper()
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// smallFileEntries are n files of size bytes in ten directories.
func smallFileEntries(n, size int) []ztoctest.File {
	entries := make([]ztoctest.File, n)
	for i := range entries {
		entries[i] = ztoctest.File{Name: fmt.Sprintf("dir%d/file-%05d", i%10, i), Type: tar.TypeReg, Mode: 0o644,
			Body: ztoctest.Content(uint64(i), size)}
	}
	return entries
}

// fileInSpan returns the name of the first regular file whose data starts at
// least a fifth into span id: a cold read of it must inflate part of the
// span before reaching it, as most small-file reads do.
func fileInSpan(b *testing.B, z *ztoc.Ztoc, id ztoc.SpanID) string {
	s, err := z.Span(id)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range z.TOC {
		if e.Type == ztoc.TypeReg && e.UncompressedOffset >= s.UncompressedStart+s.UncompressedSize()/5 {
			return e.Name
		}
	}
	b.Fatalf("no file in span %d", id)
	return ""
}

// mountFresh mounts img through f, untimed, and returns the mountpoint. It
// collects the garbage of the benchmark's own setup first: a collection of
// this process's heap (over 100 MB of generated layers) during the timed
// read delayed it by several milliseconds, which the daemon, whose heap is
// a fraction of that, would not see.
func mountFresh(b *testing.B, f *FS, img *image) string {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	mp := mountImage(b, f, img)
	runtime.GC()
	return mp
}

// BenchmarkMountColdSmallFile reads one 2 KiB file cold through the mount
// (cat: process start included, local-cat-ms is the same cat of a local
// copy), in strict and deferred verification, and reports the time and
// what crossed the network before them, against what had to: needed-KiB is
// the compressed bytes from the span's checkpoint to the end of the file,
// the least any reader of this zTOC must receive. Baselines from the same
// iteration: a one-byte range request (the registry's round trip, the floor
// of any cold read) and the reference's way, a whole-span read (fetch the
// span, check its digest, inflate it). It runs on both registries:
// distribution takes 2–4 ms to answer a range request here and sends at
// about 600 MB/s, which is most of a strict read's time.
func BenchmarkMountColdSmallFile(b *testing.B) {
	for _, kind := range []regtest.Kind{regtest.KindDistribution, regtest.KindOlareg} {
		b.Run("registry="+string(kind), func(b *testing.B) { benchColdSmallFile(b, regtest.Start(b, kind)) })
	}
}

func benchColdSmallFile(b *testing.B, reg *regtest.Registry) {
	img := pushEntries(b, reg, "bench/small", smallFileEntries(6000, 2048), ztoc.DefaultSpanSize)
	name := fileInSpan(b, img.ztoc, 1)
	want := img.entries[0].Body[:0]
	for _, e := range img.entries {
		if e.Name == name {
			want = e.Body
		}
	}
	needed := compressedPrefix(b, img, name)
	blob := benchBlob(b, img)
	local := filepath.Join(b.TempDir(), "local")
	if err := os.WriteFile(local, want, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name   string
		verify span.VerifyMode
	}{{"strict", span.VerifyStrict}, {"deferred", span.VerifyDeferred}} {
		b.Run(mode.name, func(b *testing.B) {
			var read, localCat, rtt, whole time.Duration
			var fetched int64
			for b.Loop() {
				f, metrics := benchFS(b, img, mode.verify)
				mp := mountFresh(b, f, img)
				before := fetchedBytes(b, metrics)
				start := time.Now()
				got := catFiles(b, filepath.Join(mp, name))
				read += time.Since(start)
				fetched += fetchedBytes(b, metrics) - before
				if !bytes.Equal(got, want) {
					b.Fatalf("read %s: %d bytes that differ from the layer's", name, len(got))
				}
				b.StopTimer()
				closeFS(b, f)
				start = time.Now()
				catFiles(b, local)
				localCat += time.Since(start)
				rtt += timeRoundTrip(b, blob)
				whole += timeWholeSpan(b, img.ztoc, blob, 1)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(read.Microseconds())/1000/n, "ms")
			b.ReportMetric(float64(localCat.Microseconds())/1000/n, "local-cat-ms")
			b.ReportMetric(float64(fetched)/1024/n, "fetched-KiB")
			b.ReportMetric(float64(needed)/1024, "needed-KiB")
			b.ReportMetric(float64(fetched)/n/float64(needed), "fetched/needed")
			b.ReportMetric(float64(rtt.Microseconds())/1000/n, "rtt-ms")
			b.ReportMetric(float64(whole.Microseconds())/1000/n, "whole-span-ms")
			b.ReportMetric(float64(read)/float64(whole), "x-vs-whole-span")
		})
	}
}

// compressedPrefix returns how many compressed bytes from the start of its
// span the inflater consumes to produce the file name's last byte, feeding it
// 1 KiB at a time.
func compressedPrefix(b *testing.B, img *image, name string) int64 {
	var ent *ztoc.FileMetadata
	for i := range img.ztoc.TOC {
		if img.ztoc.TOC[i].Name == name {
			ent = &img.ztoc.TOC[i]
		}
	}
	s, err := img.ztoc.Span(img.ztoc.SpanOf(ent.UncompressedOffset))
	if err != nil || s.Checkpoint == nil {
		b.Fatalf("span of %s: %v", name, err)
	}
	in := &trickle{data: img.layer[s.CompressedStart:s.CompressedEnd]}
	r, err := gzipx.NewResumeReader(in, s.Checkpoint.Bits, s.Checkpoint.Window)
	if err != nil {
		b.Fatal(err)
	}
	need := ent.UncompressedOffset + ent.UncompressedSize - s.UncompressedStart
	out := make([]byte, 1024)
	for got := int64(0); got < need; {
		n, err := r.Read(out[:min(int64(len(out)), need-got)])
		got += int64(n)
		if err != nil && got < need {
			b.Fatalf("inflate span of %s: %v", name, err)
		}
	}
	return in.off
}

// trickle hands out its data 1 KiB per Read.
type trickle struct {
	data []byte
	off  int64
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.off == int64(len(t.data)) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1024)], t.data[t.off:])
	t.off += int64(n)
	return n, nil
}

// benchBlob opens img's layer blob on its registry, as the FS does.
func benchBlob(b *testing.B, img *image) span.BlobReader {
	b.Helper()
	br, err := remoteBlobs().OpenBlob(context.Background(), img.ref)
	if err != nil {
		b.Fatal(err)
	}
	return br
}

// timeRoundTrip times a one-byte range request.
func timeRoundTrip(b *testing.B, blob span.BlobReader) time.Duration {
	start := time.Now()
	rc, err := blob.FetchRange(context.Background(), 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// timeWholeSpan times the reference's small read: span id fetched whole,
// verified, then inflated.
func timeWholeSpan(b *testing.B, z *ztoc.Ztoc, blob span.BlobReader, id ztoc.SpanID) time.Duration {
	start := time.Now()
	if _, err := z.ReadSpan(context.Background(), blob, id); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkMountCold2000Files reads 2,000 files of 2 KiB cold through the
// mount, one after another in tree order (one cat), against pulling the same layer
// whole (download, gunzip, untar) in the same iteration: what a snapshotter
// without lazy loading needs before the first of them can be read.
func BenchmarkMountCold2000Files(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	entries := smallFileEntries(2000, 2048)
	img := pushEntries(b, reg, "bench/files2000", entries, ztoc.DefaultSpanSize)
	blobURL := fmt.Sprintf("http://%s/v2/bench/files2000/blobs/%s", reg.Host, img.ref.LayerDigest)
	paths := func(mp string) []string {
		p := make([]string, len(entries))
		for i, e := range entries {
			p[i] = filepath.Join(mp, e.Name)
		}
		return p
	}
	for _, mode := range []struct {
		name   string
		verify span.VerifyMode
	}{{"strict", span.VerifyStrict}, {"deferred", span.VerifyDeferred}} {
		b.Run(mode.name, func(b *testing.B) {
			var lazy, pull time.Duration
			for b.Loop() {
				f, _ := benchFS(b, img, mode.verify)
				mp := mountFresh(b, f, img)
				start := time.Now()
				if got := catFiles(b, paths(mp)...); len(got) != 2000*2048 {
					b.Fatalf("read %d bytes of the 2,000 files, want %d", len(got), 2000*2048)
				}
				lazy += time.Since(start)
				b.StopTimer()
				closeFS(b, f)
				start = time.Now()
				if err := pullAndExtract(blobURL, b.TempDir()); err != nil {
					b.Fatal(err)
				}
				pull += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(lazy.Seconds()/float64(b.N), "s/2000files")
			b.ReportMetric(pull.Seconds()/float64(b.N), "pull-s")
			b.ReportMetric(float64(lazy)/float64(pull), "x-vs-pull")
		})
	}
}

// BenchmarkMountSequential64MiB reads a 64 MiB file cold through the mount
// (cat: the kernel's readahead turns it into 1 MiB requests), against `gzip
// -dc` of the same layer from local disk in the same iteration. MB/s is
// 10⁶ bytes per second, as the target is. The CPU time of this
// process (the daemon's side) and of the registry are reported per MiB, and
// the fraction of the machine's CPU time left idle during the read: on two
// cores the registry's share is taken from the reads, and distribution's
// registry costs eight times olareg's per byte served, so both are run.
func BenchmarkMountSequential64MiB(b *testing.B) {
	for _, kind := range []regtest.Kind{regtest.KindDistribution, regtest.KindOlareg} {
		b.Run("registry="+string(kind), func(b *testing.B) { benchSequential(b, regtest.Start(b, kind)) })
	}
}

func benchSequential(b *testing.B, reg *regtest.Registry) {
	body := ztoctest.Content(64, 64<<20)
	img := pushEntries(b, reg, "bench/seq", []ztoctest.File{{Name: "big", Type: tar.TypeReg, Mode: 0o644, Body: body}},
		ztoc.DefaultSpanSize)
	layerPath := filepath.Join(b.TempDir(), "layer.gz")
	if err := os.WriteFile(layerPath, img.layer, 0o600); err != nil {
		b.Fatal(err)
	}
	var lazy, gunzip, cpu, regCPU, idleT time.Duration
	for b.Loop() {
		f, _ := benchFS(b, img, span.VerifyStrict)
		mp := mountFresh(b, f, img)
		cpu0, reg0 := processCPU(b, os.Getpid()), processCPU(b, reg.PID())
		idle0 := machineIdle(b)
		start := time.Now()
		// To /dev/null: cat's output through a pipe would cost this
		// process a copy of every byte. cat fails on a short or failed
		// read.
		catToNull(b, filepath.Join(mp, "big"))
		lazy += time.Since(start)
		idleT += machineIdle(b) - idle0
		cpu += processCPU(b, os.Getpid()) - cpu0
		regCPU += processCPU(b, reg.PID()) - reg0
		b.StopTimer()
		closeFS(b, f)
		start = time.Now()
		// Counted, not kept: a 64 MiB buffer per iteration would make the
		// collector run during the timed reads.
		var out countingWriter
		gz := exec.Command("gzip", "-dc", layerPath)
		gz.Stdout = &out
		if err := gz.Run(); err != nil || out.n < int64(len(body)) {
			b.Fatalf("gzip -dc: %d bytes, %v", out.n, err)
		}
		gunzip += time.Since(start)
		b.StartTimer()
	}
	mb := float64(len(body)) / 1e6 * float64(b.N)
	b.ReportMetric(mb/lazy.Seconds(), "MB/s")
	b.ReportMetric(mb/gunzip.Seconds(), "gzip-dc-MB/s")
	b.ReportMetric(gunzip.Seconds()/lazy.Seconds(), "x-vs-gzip-dc") // >1: faster than gzip -dc from local disk
	mib := float64(len(body)) / (1 << 20) * float64(b.N)
	b.ReportMetric(cpu.Seconds()*1000/mib, "cpu-ms/MiB")
	b.ReportMetric(regCPU.Seconds()*1000/mib, "registry-cpu-ms/MiB")
	b.ReportMetric(idleT.Seconds()/lazy.Seconds()/2, "idle-frac")
}

// processCPU returns the user and system time process pid has used, from
// /proc (in clock ticks of 10 ms).
func processCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is the first, utime the 12th, stime the 13th.
	rest := stat[bytes.LastIndexByte(stat, ')')+2:]
	return sumTicks(bytes.Fields(rest)[11:13])
}

// sumTicks adds up fields of clock ticks (10 ms each).
func sumTicks(fields [][]byte) time.Duration {
	var ticks int64
	for _, s := range fields {
		var v int64
		fmt.Sscan(string(s), &v)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// countingWriter counts and drops what is written to it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// catFiles runs cat on paths, as a container's process would read them,
// and returns what it printed.
func catFiles(b *testing.B, paths ...string) []byte {
	b.Helper()
	out, err := exec.Command("cat", paths...).Output()
	if err != nil {
		b.Fatalf("cat %d files: %v", len(paths), err)
	}
	return out
}

// catToNull runs cat on path with its output going to /dev/null.
func catToNull(b *testing.B, path string) {
	b.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	var stderr bytes.Buffer
	cmd := exec.Command("cat", path)
	cmd.Stdout, cmd.Stderr = null, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("cat %s: %v %s", path, err, stderr.Bytes())
	}
}

// machineIdle returns the idle time of all CPUs so far, from /proc/stat (in
// clock ticks of 10 ms).
func machineIdle(b *testing.B) time.Duration {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	// The first line sums all CPUs: "cpu user nice system idle iowait ...".
	return sumTicks(bytes.Fields(stat[:bytes.IndexByte(stat, '\n')])[4:6])
}
