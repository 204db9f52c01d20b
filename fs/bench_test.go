package fs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// BenchmarkTimeToFirstFile measures what lazy loading is for: the time from
// "start this layer" to the first file's bytes, mounting lazily (zTOC in
// hand, blob probe, FUSE mount, one small file read, unmount; mount and
// first read also reported alone) against
// pulling the layer whole (download, gunzip, untar to disk, read the file),
// both from the same real registry in the same run. The figure to read is
// lazy/pull (lower is better); it shrinks as layers grow.
func BenchmarkTimeToFirstFile(b *testing.B) {
	reg := regtest.Start(b, regtest.KindDistribution)
	var entries []ztoctest.File
	entries = append(entries, ztoctest.File{Name: "etc/config", Type: tar.TypeReg, Mode: 0o644, Body: []byte("listen = :8080\n")})
	for i := range 48 {
		entries = append(entries, ztoctest.File{Name: fmt.Sprintf("usr/lib/lib%02d.so", i), Type: tar.TypeReg, Mode: 0o755,
			Body: ztoctest.Content(uint64(i), 1<<20)})
	}
	img := pushEntries(b, reg, "bench/ttff", entries, 1<<20)
	blobURL := fmt.Sprintf("http://%s/v2/bench/ttff/blobs/%s", reg.Host, img.ref.LayerDigest)
	ctx := context.Background()

	var lazy, pull, mountT, readT time.Duration
	for b.Loop() {
		// A new FS each round: an empty span cache, as on a new node.
		b.StopTimer()
		f, err := New(b.TempDir(), newSource(img), remoteBlobs())
		if err != nil {
			b.Fatal(err)
		}
		mp := mountDir(b)
		b.StartTimer()
		start := time.Now()
		if err := f.Mount(ctx, mp, img.criLabels()); err != nil {
			b.Fatal(err)
		}
		mountT += time.Since(start)
		readStart := time.Now()
		if got, err := readFile(mp, "etc/config"); err != nil || len(got) == 0 {
			b.Fatalf("lazy read: %q, %v", got, err)
		}
		readT += time.Since(readStart)
		if err := f.Unmount(ctx, mp); err != nil {
			b.Fatal(err)
		}
		lazy += time.Since(start)
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}

		start = time.Now()
		dir := b.TempDir()
		if err := pullAndExtract(blobURL, dir); err != nil {
			b.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "etc/config")); err != nil || !bytes.Contains(got, []byte("listen")) {
			b.Fatalf("pulled etc/config: %q, %v", got, err)
		}
		pull += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(float64(lazy.Microseconds())/n, "lazy-µs/op")
	b.ReportMetric(float64(pull.Microseconds())/n, "pull-µs/op")
	b.ReportMetric(float64(mountT.Microseconds())/n, "mount-µs/op")
	b.ReportMetric(float64(readT.Microseconds())/n, "first-read-µs/op")
	b.ReportMetric(float64(lazy)/float64(pull), "lazy/pull")
	b.ReportMetric(float64(len(img.layer))/(1<<20), "layer-MiB")
}

// pullAndExtract is the baseline: the whole blob over HTTP, inflated and
// written out file by file under dir, as containerd's unpack does.
func pullAndExtract(url, dir string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
