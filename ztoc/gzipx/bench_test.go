package gzipx

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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

// cpuTime is the CPU time (user and system) used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
	extCPU := time.Duration(1<<63 - 1)
	ext := timeIt(b, 3, func() error {
		cmd := exec.Command(gz, "-dc", path)
		cmd.Stdout = null
		err := cmd.Run()
		if err == nil {
			extCPU = min(extCPU, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
		}
		return err
	})
	b.ReportMetric(float64(ours)/float64(ext), "x-vs-gzip-dc")
	// On a shared machine wall time is noisy; CPU time much less so.
	oursCPU := time.Duration(1<<63 - 1)
	for range 3 {
		before := cpuTime()
		if err := inflateOurs(z); err != nil {
			b.Fatal(err)
		}
		oursCPU = min(oursCPU, cpuTime()-before)
	}
	b.ReportMetric(float64(oursCPU)/float64(extCPU), "x-vs-gzip-dc-cpu")
}

// BenchmarkResume inflates every 4 MiB span of 32 MiB of tar-like data
// through its own resume reader, as span reads do, and reports the time
// relative to inflating the whole file with compress/gzip.
func BenchmarkResume(b *testing.B) {
	const size, span = 32 << 20, 4 << 20
	data := payload(size, 43)
	z := gzipStd(b, data, 6)
	type cp struct {
		b      Boundary
		window []byte
	}
	var cps []cp
	inf := NewInflater(bytes.NewReader(z))
	last := int64(0)
	inf.SetBoundaryFunc(func(x Boundary) {
		if !x.LastBlock && (x.Out == 0 || x.Out-last > span) {
			cps = append(cps, cp{x, inf.Window(nil)})
			last = x.Out
		}
	})
	if _, err := io.Copy(io.Discard, inf); err != nil {
		b.Fatal(err)
	}
	resumeAll := func() error {
		for i, c := range cps {
			start, end := c.b.In, int64(len(z))
			if c.b.Bits != 0 {
				start--
			}
			if i+1 < len(cps) {
				end = cps[i+1].b.In
			}
			r, err := NewResumeReader(bytes.NewReader(z[start:end]), c.b.Bits, c.window)
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
		}
		return nil
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if err := resumeAll(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ours := timeIt(b, 3, resumeAll)
	std := timeIt(b, 3, func() error { return inflateStd(z) })
	b.ReportMetric(float64(ours)/float64(std), "x-vs-stdlib")
	b.ReportMetric(float64(len(cps)), "spans")
}
