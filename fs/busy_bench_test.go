package fs

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/internal/regtest"
)

// BenchmarkVerifiedWhileBusy measures how long after its mount a large
// layer is verified by the completion pass while a container keeps reading
// it, so the node is never quiet: the daemon's defaults (30 s silence
// period, 30 s max_deferral). The baseline, in the same run, is the pass
// alone on an idle node, driven step after step. The layer is about 360 MB
// of gzip ($OCISEEK_BENCH_BUSY_MB to change it); the target is verified
// within 60 s of the mount on loopback.
func BenchmarkVerifiedWhileBusy(b *testing.B) {
	const fileSize = 4 << 20
	n := envInt("OCISEEK_BENCH_BUSY_MB", 360) * 2 << 20 / fileSize // Content compresses about 2:1
	img := pushEntries(b, regtest.Start(b, regtest.KindDistribution), "bench/busy", bigFileEntries(n, fileSize), 4<<20)
	img.entries = nil
	ctx := context.Background()

	var busy, idle time.Duration
	for b.Loop() {
		f := newFS(b, newSource(img), WithBackgroundFetch(bgfetch.Options{QuietPeriod: 30 * time.Second}))
		mp := mountImage(b, f, img)
		start := time.Now()
		var stop atomic.Bool
		done := make(chan struct{})
		go func() { // the container: a read every 50 ms, all the time
			defer close(done)
			for i := 0; !stop.Load(); i++ {
				_, _ = readFile(mp, fmt.Sprintf("data/f%04d", i%8))
				time.Sleep(50 * time.Millisecond)
			}
		}()
		awaitComplete(b, f, mp, start, 100*time.Millisecond)
		busy += time.Since(start)
		stop.Store(true)
		<-done

		g := newFS(b, newSource(img))
		mp = mountImage(b, g, img)
		m, err := g.get(mp)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for fin := false; !fin; {
			if _, fin, err = m.mgr.FetchNext(ctx); err != nil {
				b.Fatal(err)
			}
		}
		idle += time.Since(start)
	}
	b.ReportMetric(busy.Seconds()/float64(b.N), "s-to-verified-busy")
	b.ReportMetric(idle.Seconds()/float64(b.N), "s-pass-idle")
	b.ReportMetric(float64(len(img.layer))/1e6, "layer-MB")
}
