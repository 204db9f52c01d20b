package build_test

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
)

// benchLayerBytes is the uncompressed size of the benchmark layer.
const benchLayerBytes = 96 << 20

// writeBenchLayer writes a gzip tar of files mixing random (incompressible)
// and repetitive data to path, streaming, and returns its size.
func writeBenchLayer(b *testing.B, path string) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := 0; i < benchLayerBytes>>20; i++ {
		for j := range buf {
			if j%2 == 0 {
				buf[j] = byte(rng.Uint32())
			} else {
				buf[j] = byte(j)
			}
		}
		hdr := &tar.Header{Name: filepath.Join("d", string(rune('a'+i%26)), "f"+string(rune('0'+i%10))), Mode: 0o644, Size: int64(len(buf)), ModTime: time.Unix(1e9, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		tw.Write(buf)
	}
	tw.Close()
	zw.Close()
	st, _ := f.Stat()
	return st.Size()
}

// heapSampler records the peak of HeapInuse while it runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func sampleHeap() *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.peak.Load() {
				s.peak.Store(ms.HeapInuse)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *heapSampler) done() uint64 {
	close(s.stop)
	s.wg.Wait()
	return s.peak.Load()
}

// BenchmarkCreate streams a ~96 MiB (uncompressed) gzip layer from a real
// registry into Create and reports, against a baseline measured in the same
// run, the time ratio to fetching and hashing the same blob
// ("x-vs-fetch"), the time ratio to ztoc.Build of the same layer from a
// local file ("x-vs-local-build": the cost of streaming from the registry,
// verifying and publishing), and the peak heap in use as a fraction of the layer's
// compressed size ("heap-vs-layer": memory must not grow with the layer).
func BenchmarkCreate(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	path := filepath.Join(b.TempDir(), "layer.tar.gz")
	size := writeBenchLayer(b, path)
	layer, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	img := reg.PushImage(b, "bench", [][]byte{layer}, nil)
	ld := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: size}
	layer = nil
	ctx := testContext(b)
	var fetch, local, create time.Duration
	var peak uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rc, err := reg.Repository(b, "bench").Blobs().Fetch(ctx, ld)
		if err != nil {
			b.Fatal(err)
		}
		v := ld.Digest.Verifier()
		io.Copy(v, rc)
		rc.Close()
		if !v.Verified() {
			b.Fatal("baseline fetch: digest mismatch")
		}
		fetch += time.Since(start)

		start = time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ztoc.Build(ctx, f, ztoc.BuildOptions{SpanSize: 4 << 20}); err != nil {
			b.Fatal(err)
		}
		f.Close()
		local += time.Since(start)

		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		s := sampleHeap()
		start = time.Now()
		opts := build.CreateOptions{Options: build.Options{SpanSize: 4 << 20}, Publish: build.PublishOptions{Settle: time.Millisecond}}
		if _, err := build.Create(ctx, reg.Repository(b, "bench"), img.Digest.String(), nil, opts); err != nil {
			b.Fatal(err)
		}
		create += time.Since(start)
		if p := s.done(); p > base.HeapInuse && p-base.HeapInuse > peak {
			peak = p - base.HeapInuse
		}
	}
	b.ReportMetric(float64(create)/float64(fetch), "x-vs-fetch")
	b.ReportMetric(float64(create)/float64(local), "x-vs-local-build")
	b.ReportMetric(float64(peak)/float64(size), "heap-vs-layer")
	b.ReportMetric(float64(size)/(1<<20), "layer-MiB")
	b.ReportMetric(float64(size)/(1<<20)/(create.Seconds()/float64(b.N)), "create-MiB/s")
}
