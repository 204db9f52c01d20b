package discover

import (
	"testing"
	"time"

	"github.com/ociseek/ociseek/internal/regtest"
)

// BenchmarkFind measures a lookup answered from the cache against one that
// goes to the registry (a fresh Discoverer: probe, referrers, index fetch),
// on each registry leg. It reports cached/uncached as a ratio.
func BenchmarkFind(b *testing.B) {
	for _, kind := range regtest.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			r := regtest.Start(b, kind)
			img := pushImage(b, r, "app", "v1", nil, "a.txt")
			pushV1(b, r, "app", img, nil)
			ref := r.Ref("app", "v1")
			ctx := ctxT(b)
			const rounds = 20
			start := time.Now()
			for i := 0; i < rounds; i++ {
				if _, err := New(Options{}).Find(ctx, ref, img.manifest.Digest, ""); err != nil {
					b.Fatal(err)
				}
			}
			uncached := time.Since(start) / rounds
			d := New(Options{})
			if _, err := d.Find(ctx, ref, img.manifest.Digest, ""); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := d.Find(ctx, ref, img.manifest.Digest, ""); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cached := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(cached)/float64(uncached), "cached/uncached")
			b.ReportMetric(float64(uncached.Microseconds()), "uncached-µs")
		})
	}
}
