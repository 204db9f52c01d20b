package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// bgOptions completes a layer as soon as it is mounted.
func bgOptions() Opt {
	return WithBackgroundFetch(bgfetch.Options{QuietPeriod: time.Millisecond, RetryDelay: 50 * time.Millisecond})
}

// waitComplete waits for the background fetch to verify the layer at mp.
func waitComplete(t testing.TB, f *FS, mp string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := f.Status(mp)
		if err != nil {
			t.Fatal(err)
		}
		if st.Complete {
			return
		}
		if st.Failed != nil || time.Now().After(deadline) {
			t.Fatalf("layer not complete: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// copies returns the passthrough copies under root, by file name (the
// entry's data offset), with their contents.
func copies(t testing.TB, root string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, filesDirName, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got[filepath.Base(p)] = b
	}
	return got
}

// tocEntry returns the zTOC entry named name.
func tocEntry(t testing.TB, z *ztoc.Ztoc, name string) *ztoc.FileMetadata {
	t.Helper()
	for i := range z.TOC {
		if z.TOC[i].Name == name {
			return &z.TOC[i]
		}
	}
	t.Fatalf("no entry %s in the zTOC", name)
	return nil
}

// wantCopies is what the copies of img's non-empty regular files should
// hold, keyed as copies returns them.
func wantCopies(t testing.TB, img *image) map[string][]byte {
	want := map[string][]byte{}
	for _, e := range img.entries {
		if (e.Type == tar.TypeReg || e.Type == 0) && len(e.Body) > 0 {
			want[strconv.FormatInt(tocEntry(t, img.ztoc, e.Name).UncompressedOffset, 10)] = e.Body
		}
	}
	return want
}

// TestPassthroughCompleteLayer: once the layer is complete, opening its
// files serves the right bytes and leaves a copy of each file, equal to
// the tar's bytes, in the files dir, reused by later opens with the
// registry gone; Unmount removes the copies.
func TestPassthroughCompleteLayer(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/passthrough")
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img), bgOptions())
	mp := mountImage(t, f, img)
	waitComplete(t, f, mp)
	checkTree(t, mp, img.entries)
	want := wantCopies(t, img)
	got := copies(t, root)
	if len(got) != len(want) {
		t.Errorf("%d copies in the files dir, want %d", len(got), len(want))
	}
	for k, body := range want {
		if !bytes.Equal(got[k], body) {
			t.Errorf("copy %s: %d bytes that differ from the tar's %d", k, len(got[k]), len(body))
		}
	}
	reg.Stop()
	checkTree(t, mp, img.entries) // the copies again, no registry needed
	checkKernelReadsCopy(t, root, mp, tocEntry(t, img.ztoc, "etc/hello.txt"))
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, filesDirName, "*")); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
	}
}

// checkKernelReadsCopy shows that the kernel reads e from its copy, not
// through this process: bytes changed in the copy (behind the layer's
// back, which nothing else ever does) are what a read through the mount
// returns.
func checkKernelReadsCopy(t *testing.T, root, mp string, e *ztoc.FileMetadata) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(root, filesDirName, "*", strconv.FormatInt(e.UncompressedOffset, 10)))
	if len(paths) != 1 {
		t.Fatalf("copies of %s: %v", e.Name, paths)
	}
	fh, err := os.Open(filepath.Join(mp, e.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	cp, err := os.OpenFile(paths[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if _, err := cp.WriteAt([]byte("J"), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	if _, err := fh.ReadAt(got, 0); err != nil || got[0] != 'J' {
		t.Errorf("read %q, %v through the mount after changing the copy; want \"J\": no passthrough", got, err)
	}
}

// TestPassthroughNotComplete: no copies while the layer is not complete
// (reads go through FUSE), nor with passthrough off.
func TestPassthroughNotComplete(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/nopassthrough")
	lazyRoot, offRoot := t.TempDir(), t.TempDir()
	lazy := newRootFS(t, lazyRoot, newSource(img))
	off := newRootFS(t, offRoot, newSource(img), WithPassthrough(false), bgOptions())
	lazyMp, offMp := mountDir(t), mountDir(t)
	for _, m := range []struct {
		f  *FS
		mp string
	}{{lazy, lazyMp}, {off, offMp}} {
		if err := m.f.Mount(context.Background(), m.mp, img.criLabels()); err != nil {
			t.Fatal(err)
		}
	}
	waitComplete(t, off, offMp)
	checkTree(t, lazyMp, img.entries)
	checkTree(t, offMp, img.entries)
	if st, _ := lazy.Status(lazyMp); st.Complete {
		t.Fatal("layer complete without background fetch; the test proves nothing")
	}
	for _, root := range []string{lazyRoot, offRoot} {
		if _, err := os.Stat(filepath.Join(root, filesDirName)); !os.IsNotExist(err) {
			t.Errorf("%s: files dir exists (%v), want no copies", root, err)
		}
	}
}

// fetchAll completes the layer at mp by fetching every span now.
func fetchAll(t *testing.T, f *FS, mp string) {
	t.Helper()
	m, err := f.get(mp)
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		if _, done, err = m.mgr.FetchNext(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// awaitCopy opens and reads name under mp until the file has a
// passthrough copy: the kernel sends RELEASE after close(2) returns, so
// the mount may count a closed FUSE handle for a moment.
func awaitCopy(t *testing.T, root, mp string, e *ztoc.FileMetadata, body []byte) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if got, err := readFile(mp, e.Name); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("read %s: %d bytes, %v; want the tar's %d", e.Name, len(got), err, len(body))
		}
		if _, ok := copies(t, root)[fileKey(e)]; ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never copied for passthrough after its handles closed", e.Name)
		}
		time.Sleep(200 * time.Millisecond) // a FUSE-mode close defers passthrough by 100 ms (fs/layer)
	}
}

// TestPassthroughEarlyOpenClosed: a file opened and closed before the
// layer completed is served by passthrough once the layer is complete.
func TestPassthroughEarlyOpenClosed(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/passthrough-early")
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img))
	mp := mountImage(t, f, img)
	hello := tocEntry(t, img.ztoc, "etc/hello.txt")
	if got, err := readFile(mp, hello.Name); err != nil || string(got) != "hello from a lazy layer\n" {
		t.Fatalf("read before completion: %q, %v", got, err)
	}
	fetchAll(t, f, mp)
	awaitCopy(t, root, mp, hello, []byte("hello from a lazy layer\n"))
	checkKernelReadsCopy(t, root, mp, hello)
}

// TestPassthroughHeldAcrossCompletion: a file kept open across the
// layer's completion stays on FUSE while that handle is open, so more
// opens next to it work (the kernel refuses mixing passthrough and FUSE
// opens of a file with EIO) and make no copy; files first opened after
// completion, many at once, each get one copy, right bytes and
// passthrough; once the early handle is closed, the file's next open is
// served by passthrough too. The metrics count the copies and their
// bytes, freed on Unmount.
func TestPassthroughHeldAcrossCompletion(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/passthrough-kept")
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img))
	mp := mountImage(t, f, img)
	hello := tocEntry(t, img.ztoc, "etc/hello.txt")
	early, err := os.Open(filepath.Join(mp, hello.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	fetchAll(t, f, mp)
	readAllConcurrently(t, mp, img)
	want := wantCopies(t, img)
	delete(want, fileKey(hello))
	checkCopies(t, root, want)
	checkKernelReadsCopy(t, root, mp, tocEntry(t, img.ztoc, "usr/bin/tool"))
	if n := testutil.ToFloat64(f.met.passthroughOpens); n < float64(8*len(want)) {
		t.Errorf("%v passthrough opens counted, want at least %d", n, 8*len(want))
	}

	early.Close()
	awaitCopy(t, root, mp, hello, []byte("hello from a lazy layer\n"))
	checkKernelReadsCopy(t, root, mp, hello)
	var size int64
	for _, e := range img.entries {
		size += int64(len(e.Body))
	}
	if n := testutil.ToFloat64(f.met.copies); n != float64(len(want)+1) {
		t.Errorf("%v copies counted, want %d", n, len(want)+1)
	}
	if n := testutil.ToFloat64(f.met.copyBytes); n != float64(size) {
		t.Errorf("copy bytes gauge %v, want %d", n, size)
	}
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(f.met.copyBytes); n != 0 {
		t.Errorf("copy bytes gauge %v after unmount, want 0", n)
	}
}

// readAllConcurrently reads every regular file of img under mp, eight
// times each, all at once, checking the bytes.
func readAllConcurrently(t *testing.T, mp string, img *image) {
	t.Helper()
	var wg sync.WaitGroup
	for range 8 {
		for _, e := range img.entries {
			if e.Type == tar.TypeReg {
				wg.Go(func() {
					if got, err := readFile(mp, e.Name); err != nil || !bytes.Equal(got, e.Body) {
						t.Errorf("read %s: %d bytes, %v; want the tar's %d", e.Name, len(got), err, len(e.Body))
					}
				})
			}
		}
	}
	wg.Wait()
}

// checkCopies compares the copies under root with want and checks that
// no temporary file is left.
func checkCopies(t *testing.T, root string, want map[string][]byte) {
	t.Helper()
	got := copies(t, root)
	if len(got) != len(want) {
		t.Errorf("%d copies, want %d", len(got), len(want))
	}
	for k, body := range want {
		if !bytes.Equal(got[k], body) {
			t.Errorf("copy %s: %d bytes that differ from the tar's %d", k, len(got[k]), len(body))
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(root, filesDirName, "*", ".tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

// TestPassthroughCopyFails: when copies cannot be written (here the files
// dir cannot be made; a full disk is alike), reads stay on FUSE and
// right, the failure is counted once per file, and not retried.
func TestPassthroughCopyFails(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/passthrough-fails")
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img), bgOptions())
	if err := os.WriteFile(filepath.Join(root, filesDirName), []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	mp := mountImage(t, f, img)
	waitComplete(t, f, mp)
	for range 3 {
		checkTree(t, mp, img.entries)
	}
	if n, want := testutil.ToFloat64(f.met.copyFailures), float64(len(wantCopies(t, img))); n != want {
		t.Errorf("%v copy failures counted, want %v (one per file)", n, want)
	}
	if n := testutil.ToFloat64(f.met.copies) + testutil.ToFloat64(f.met.passthroughOpens); n != 0 {
		t.Errorf("%v copies and passthrough opens counted, want none", n)
	}
}

// TestPassthroughLeftovers: copies a previous run left are removed by New.
func TestPassthroughLeftovers(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	old := filepath.Join(root, filesDirName, "abc-123", "1024")
	if err := os.MkdirAll(filepath.Dir(old), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	newRootFS(t, root, newSource())
	if _, err := os.Stat(filepath.Join(root, filesDirName)); !os.IsNotExist(err) {
		t.Errorf("old copies still there: %v", err)
	}
}

// readThrough reads the whole of f (or of a fresh open of path when f is
// nil) into buf-sized reads and returns how long it took.
func readThrough(b *testing.B, path string, f *os.File, buf []byte) time.Duration {
	start := time.Now()
	if f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			b.Fatal(err)
		}
		defer f.Close()
	}
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		off += int64(n)
		if err != nil || n == 0 {
			break
		}
	}
	return time.Since(start)
}

// BenchmarkPassthroughWarmReread re-reads a 64 MiB file whose pages are
// cached, through the real mount path (registry, background completion,
// span cache), against the same file on local disk: with passthrough (the
// copy made), and with passthrough off (every read a FUSE round trip).
// Each through a descriptor held open and with an open per read. The
// figure to read is x-vs-local (local time / passthrough time; target
// >= 0.9); run with -count 3 and take the median. first-read-copy/fuse is
// the price: the first open and read of the file (copy included) against
// the same first read with passthrough off.
func BenchmarkPassthroughWarmReread(b *testing.B) {
	const size = 64 << 20
	body := ztoctest.Content(42, size)
	entries := []ztoctest.File{{Name: "big", Type: tar.TypeReg, Mode: 0o644, Body: body}}
	img := pushEntries(b, regtest.Start(b, regtest.KindDistribution), "bench/passthrough", entries, 4<<20)
	local := filepath.Join(b.TempDir(), "big")
	if err := os.WriteFile(local, body, 0o644); err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	on := newRootFS(b, root, newSource(img), bgOptions())
	off := newRootFS(b, b.TempDir(), newSource(img), bgOptions(), WithPassthrough(false))
	onMp, offMp := mountDir(b), mountDir(b)
	for _, m := range []struct {
		f  *FS
		mp string
	}{{on, onMp}, {off, offMp}} {
		if err := m.f.Mount(context.Background(), m.mp, img.criLabels()); err != nil {
			b.Fatal(err)
		}
		waitComplete(b, m.f, m.mp)
	}
	// The first open copies the file; with passthrough off it is read
	// through FUSE: both from the span cache, for comparison.
	var first [2]time.Duration
	for i, mp := range []string{onMp, offMp} {
		start := time.Now()
		if got, err := readFile(mp, "big"); err != nil || !bytes.Equal(got, body) {
			b.Fatalf("read through the mount: %d bytes, %v", len(got), err)
		}
		first[i] = time.Since(start)
	}
	if len(copies(b, root)) != 1 {
		b.Fatal("no passthrough copy after the first open")
	}
	paths := []string{local, filepath.Join(onMp, "big"), filepath.Join(offMp, "big")}
	held := make([]*os.File, len(paths))
	buf := make([]byte, 1<<20)
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		held[i] = f
		readThrough(b, p, f, buf) // warm the page cache
	}
	var tHeld, tOpen [3]time.Duration
	b.SetBytes(2 * size)
	for b.Loop() {
		for i, p := range paths {
			tHeld[i] += readThrough(b, p, held[i], buf)
			tOpen[i] += readThrough(b, p, nil, buf)
		}
	}
	ratio := func(t [3]time.Duration, i int) float64 { return float64(t[0]) / float64(t[i]) }
	b.ReportMetric(ratio(tHeld, 1), "x-vs-local")
	b.ReportMetric(ratio(tOpen, 1), "open-x-vs-local")
	b.ReportMetric(ratio(tHeld, 2), "nopassthrough-x-vs-local")
	b.ReportMetric(ratio(tOpen, 2), "nopassthrough-open-x-vs-local")
	b.ReportMetric(float64(size)*float64(b.N)/tHeld[0].Seconds()/1e6, "local-MB/s")
	b.ReportMetric(float64(first[0])/float64(first[1]), "first-read-copy/fuse")
}
