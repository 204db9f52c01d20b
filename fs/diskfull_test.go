package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestFullCacheDisk puts the span cache on a 256 KiB tmpfs, far smaller
// than the layer: cache writes fail with ENOSPC. Reads must still return
// the right bytes (served from the fetched spans), and the completion pass
// must still verify the layer, rather than give up or report it done
// without checking it.
func TestFullCacheDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })

	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/diskfull")
	f := newFS(t, newSource(img), WithCacheDir(dir))
	mp := mountImage(t, f, img)
	for _, e := range img.entries {
		if len(e.Body) == 0 {
			continue
		}
		got, err := readFile(mp, e.Name)
		if err != nil || !bytes.Equal(got, e.Body) {
			t.Fatalf("read %s over a full cache disk: %d bytes, %v", e.Name, len(got), err)
		}
	}
	m, err := f.get(mp)
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		if _, done, err = m.mgr.FetchNext(context.Background()); err != nil {
			t.Fatalf("completion over a full cache disk: %v", err)
		}
	}
	if !m.mgr.Complete() || m.mgr.Failed() != nil {
		t.Fatalf("complete=%v failed=%v: want the layer verified although nothing could be cached", m.mgr.Complete(), m.mgr.Failed())
	}
	checkTree(t, mp, img.entries)
}
