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

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// bgOptions completes a layer as soon as it is mounted.
func bgOptions() Opt {
	return WithBackgroundFetch(bgfetch.Options{QuietPeriod: time.Millisecond, RetryDelay: 50 * time.Millisecond})
}

// newRootFS is newFS with the root given, to look at what the FS keeps
// there.
func newRootFS(t testing.TB, root string, src ZtocSource, opts ...Opt) *FS {
	t.Helper()
	f, err := New(root, src, remoteBlobs(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
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
	mp := mountDir(t)
	if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
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
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, filesDirName, "*")); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
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

// TestPassthroughBigFile: a file above the copy-on-open limit is read
// through FUSE on its first open while it is copied in the background;
// later opens get the copy. Concurrent opens all read the right bytes and
// leave one copy.
func TestPassthroughBigFile(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	entries := []ztoctest.File{
		{Name: "big.bin", Type: tar.TypeReg, Mode: 0o644, Body: ztoctest.Content(7, syncCopyLimit+12345)},
		{Name: "small.bin", Type: tar.TypeReg, Mode: 0o644, Body: ztoctest.Content(8, 100<<10)},
	}
	img := pushEntries(t, reg, "lazy/passthrough-big", entries, 1<<20)
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img), bgOptions())
	mp := mountDir(t)
	if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, f, mp)
	var wg sync.WaitGroup
	for range 8 {
		for _, e := range entries {
			wg.Go(func() {
				if got, err := readFile(mp, e.Name); err != nil || !bytes.Equal(got, e.Body) {
					t.Errorf("read %s: %d bytes, %v; want the tar's %d", e.Name, len(got), err, len(e.Body))
				}
			})
		}
	}
	wg.Wait()
	want := wantCopies(t, img)
	deadline := time.Now().Add(20 * time.Second)
	for len(copies(t, root)) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("copies %d, want %d", len(copies(t, root)), len(want))
		}
		// A background copy skipped while another ran starts on a later open.
		_, _ = readFile(mp, "big.bin")
		time.Sleep(10 * time.Millisecond)
	}
	got := copies(t, root)
	for k, body := range want {
		if !bytes.Equal(got[k], body) {
			t.Errorf("copy %s: %d bytes that differ from the tar's %d", k, len(got[k]), len(body))
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(root, filesDirName, "*", ".tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	checkTree(t, mp, entries)
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
