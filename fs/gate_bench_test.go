package fs

import (
	"archive/tar"
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// BenchmarkMetadataGateFirstOutput measures what verifying privileged
// metadata before exposing it adds to the bytes fetched before a
// container's first output, on a 20k-file layer laid out as image builders
// write one (each directory's header, then its files; a symlink and a
// hardlink per directory; default 4 MiB spans). The "first output" is what
// starting a program from it touches: its directories, a symlink to it,
// the program itself and a config file elsewhere in the layer. The same
// walk with the check turned off is the baseline, in the same run; the
// figure to read is gated/trusted (≤ 1.10 is the target).
func BenchmarkMetadataGateFirstOutput(b *testing.B) {
	var entries []ztoctest.File
	for d := range 200 {
		dir := fmt.Sprintf("usr/lib/pkg%03d/", d)
		entries = append(entries, ztoctest.File{Name: dir, Type: tar.TypeDir, Mode: 0o755})
		for i := range 100 {
			entries = append(entries, ztoctest.File{Name: fmt.Sprintf("%sf%03d", dir, i), Type: tar.TypeReg, Mode: 0o644,
				Body: ztoctest.Content(uint64(d*100+i), 2<<10)})
		}
		entries = append(entries,
			ztoctest.File{Name: dir + "current", Type: tar.TypeSymlink, Mode: 0o777, Linkname: "f000"},
			ztoctest.File{Name: dir + "again", Type: tar.TypeLink, Linkname: dir + "f001"})
	}
	img := pushEntries(b, regtest.Start(b, regtest.KindDistribution), "bench/gate", entries, 4<<20)
	walk := []string{"usr/lib/pkg120/current", "usr/lib/pkg120/f050", "usr/lib/pkg010/again"}

	fetched := func(trust bool) float64 {
		f := newFS(b, newSource(img))
		f.cfg.layerOpts.TrustMetadata = trust
		mp := mountImage(b, f, img)
		for _, name := range walk {
			if _, err := readFile(mp, name); err != nil {
				b.Fatalf("read %s: %v", name, err)
			}
		}
		var n float64
		for _, r := range []string{span.ReasonDemand, span.ReasonAhead, span.ReasonPrefix} {
			n += testutil.ToFloat64(f.spanMet.BytesFetched.WithLabelValues(r))
		}
		if err := f.Unmount(context.Background(), mp); err != nil {
			b.Fatal(err)
		}
		return n
	}
	var gated, trusted float64
	for b.Loop() {
		trusted += fetched(true)
		gated += fetched(false)
	}
	b.ReportMetric(gated/float64(b.N), "gated-bytes/op")
	b.ReportMetric(trusted/float64(b.N), "trusted-bytes/op")
	b.ReportMetric(gated/trusted, "gated/trusted")
	b.ReportMetric(float64(len(img.layer))/(1<<20), "layer-MiB")
}
