package fs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestForgedMetadataIsNotExposed: a TOC retargeted to show etc/ with mode
// 0777 and the symlink pointing at /proc/1/root must not show either, even
// before the completion pass ran: the headers behind privileged metadata
// are checked before the kernel sees it. Plain files stay readable.
func TestForgedMetadataIsNotExposed(t *testing.T) {
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/meta")
	for i := range img.ztoc.TOC {
		e := &img.ztoc.TOC[i]
		switch e.Name {
		case "etc/":
			e.Mode = 0o777
		case "link":
			e.Linkname = "/proc/1/root"
		}
	}
	f := newFS(t, newSource(img))
	mp := mountImage(t, f, img)
	if fi, err := os.Lstat(filepath.Join(mp, "etc")); !errors.Is(err, syscall.EIO) {
		t.Errorf("lstat etc = %v, %v; want EIO, not the forged mode", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(mp, "link")); !errors.Is(err, syscall.EIO) {
		t.Errorf("readlink link = %q, %v; want EIO, not the forged target", target, err)
	}
	m, err := f.get(mp)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.mgr.Failed(); err == nil {
		t.Error("the layer did not fail although its TOC contradicts its headers")
	}
}

// TestHonestMetadataIsExposed: the same checks pass on an honest layer,
// so every kind of node is served.
func TestHonestMetadataIsExposed(t *testing.T) {
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/meta-ok")
	f := newFS(t, newSource(img))
	mp := mountImage(t, f, img)
	checkTree(t, mp, img.entries)
	if fi, err := os.Lstat(filepath.Join(mp, "etc")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("lstat etc = %v, %v", fi, err)
	}
}

// TestUnverifiedLayersGauge: a mounted layer counts as unverified until its
// completion pass has checked it, which an operator sees in
// ociseek_fs_layers_unverified (it never drops when completion is off).
func TestUnverifiedLayersGauge(t *testing.T) {
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/unverified")
	reg := prometheus.NewRegistry()
	f := newFS(t, newSource(img), WithRegisterer(reg))
	mp := mountImage(t, f, img)
	gauge := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "ociseek_fs_layers_unverified" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("ociseek_fs_layers_unverified not registered")
		return 0
	}
	if got := gauge(); got != 1 {
		t.Errorf("unverified layers after mount = %v, want 1", got)
	}
	fetchAll(t, f, mp)
	if got := gauge(); got != 0 {
		t.Errorf("unverified layers after completion = %v, want 0", got)
	}
}
