package layer

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// mountOverlay mounts overlayfs at a new directory, unmounting it (before the
// FUSE lowers, as cleanups run last-in first-out) when the test ends.
func mountOverlay(t *testing.T, opts string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := syscall.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount overlay: %v; detaching", err)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mnt
}

// overlayLayers mounts two layers; the lower has no xattrs at all, so its
// mount runs with xattrs disabled, which overlayfs must accept in a lower.
func overlayLayers(t *testing.T, opts Options) (lower, upper string) {
	lowerTar := makeTar(t, []tarEntry{
		{name: "a/", typ: tar.TypeDir, mode: 0o755},
		{name: "a/keep", typ: tar.TypeReg, mode: 0o644, body: "kept"},
		{name: "a/gone", typ: tar.TypeReg, mode: 0o644, body: "deleted by upper"},
		{name: "d/", typ: tar.TypeDir, mode: 0o755},
		{name: "d/old", typ: tar.TypeReg, mode: 0o644, body: "hidden by opaque"},
		{name: "d/sub/old2", typ: tar.TypeReg, mode: 0o644, body: "hidden by opaque"},
		{name: "f.txt", typ: tar.TypeReg, mode: 0o644, body: "lower"},
	})
	upperTar := makeTar(t, []tarEntry{
		{name: "a/", typ: tar.TypeDir, mode: 0o755},
		{name: "a/.wh.gone", typ: tar.TypeReg, mode: 0o644},
		{name: "d/", typ: tar.TypeDir, mode: 0o750},
		{name: "d/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		{name: "d/new", typ: tar.TypeReg, mode: 0o644, body: "new in upper"},
		{name: "f.txt", typ: tar.TypeReg, mode: 0o600, body: "upper"},
		{name: "new/x", typ: tar.TypeReg, mode: 0o644, body: "x"},
	})
	lower = mountTree(t, tocFromTar(t, lowerTar), newMemReader(lowerTar), opts)
	upper = mountTree(t, tocFromTar(t, upperTar), newMemReader(upperTar), opts)
	return lower, upper
}

// checkMerged asserts the merged view of overlayLayers' two layers.
func checkMerged(t *testing.T, merged string) {
	t.Helper()
	want := map[string]string{"a/keep": "kept", "d/new": "new in upper", "f.txt": "upper", "new/x": "x"}
	got := map[string]string{}
	err := filepath.WalkDir(merged, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(merged, p)
		got[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("walk merged view: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("merged files = %v, want %v", got, want)
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("merged %s = %q, want %q", n, got[n], w)
		}
	}
	for _, n := range []string{"a/gone", "d/old", "d/sub"} {
		if _, err := os.Lstat(filepath.Join(merged, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("merged %s: %v, want it hidden", n, err)
		}
	}
	if st, err := os.Stat(filepath.Join(merged, "d")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("merged d: %v %v, want the upper layer's 0750", st, err)
	}
}

func TestOverlayMergedView(t *testing.T) {
	lower, upper := overlayLayers(t, Options{})
	merged := mountOverlay(t, "lowerdir="+upper+":"+lower)
	checkMerged(t, merged)
	if _, err := os.ReadDir(filepath.Join(merged, "d")); err != nil {
		t.Errorf("readdir opaque dir: %v", err)
	}
}

// TestOverlayWritableContainer is the container's view: an upper directory on
// local disk over the FUSE layers. Deleting a lower file, copying one up and
// creating one all work, and the FUSE layers stay untouched.
func TestOverlayWritableContainer(t *testing.T) {
	lower, upper := overlayLayers(t, Options{})
	rw, work := t.TempDir(), t.TempDir()
	merged := mountOverlay(t, "lowerdir="+upper+":"+lower+",upperdir="+rw+",workdir="+work)
	checkMerged(t, merged)

	if err := os.Remove(filepath.Join(merged, "a/keep")); err != nil {
		t.Errorf("remove lower file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(merged, "f.txt"), []byte("container"), 0o600); err != nil {
		t.Errorf("copy up: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "f.txt")); err != nil || string(b) != "upper" {
		t.Errorf("FUSE layer changed: %q, %v", b, err)
	}
	entries, err := os.ReadDir(filepath.Join(merged, "a"))
	if err != nil || len(entries) != 0 {
		t.Errorf("merged a after removal: %v, %v", entries, err)
	}
}

// TestOverlayUserXattr checks the userxattr flavour (as used by rootless
// overlay): the opaque marker is read from user.overlay.opaque.
func TestOverlayUserXattr(t *testing.T) {
	lower, upper := overlayLayers(t, Options{UserXattr: true})
	merged := mountOverlay(t, "userxattr,lowerdir="+upper+":"+lower)
	checkMerged(t, merged)

	buf := make([]byte, 256)
	n, err := syscall.Listxattr(filepath.Join(upper, "d"), buf)
	if err != nil {
		t.Fatalf("listxattr: %v", err)
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	if !slices.Equal(names, []string{opaqueXattrTrusted, opaqueXattrUser}) {
		t.Errorf("opaque dir xattrs = %q", names)
	}
}
