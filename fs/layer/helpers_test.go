package layer

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// memReader serves the uncompressed tar from memory: it stands in for the
// span layer, so these tests exercise the tree alone.
type memReader struct{ r *bytes.Reader }

func (m memReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return m.r.ReadAt(p, off)
}

func newMemReader(tarBytes []byte) memReader { return memReader{bytes.NewReader(tarBytes)} }

// requireFUSE skips tests that mount when the process cannot: they need root
// and /dev/fuse (present where make test runs).
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// mountTree builds and mounts a layer, unmounting it when the test ends
// (lazily if a reader still holds it, so a failing test cannot wedge the
// next one).
func mountTree(t testing.TB, toc []ztoc.FileMetadata, r Reader, opts Options) string {
	t.Helper()
	requireFUSE(t)
	root, err := New(toc, r, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mnt := t.TempDir()
	srv, err := Mount(mnt, root, MountOptions{})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Logf("unmount %s: %v; detaching", mnt, err)
			if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
				t.Errorf("detach %s: %v", mnt, err)
			}
			srv.Wait()
		}
	})
	return mnt
}

// tocFromExpect converts a fixture's expected TOC (the zTOC's entries as the
// reference builder stored them) into the model.
func tocFromExpect(t testing.TB, es []ztoctest.ExpectEntry) []ztoc.FileMetadata {
	t.Helper()
	out := make([]ztoc.FileMetadata, len(es))
	for i, e := range es {
		mt, err := time.Parse(time.RFC3339Nano, e.ModTime)
		if err != nil {
			t.Fatalf("entry %q mod_time: %v", e.Name, err)
		}
		out[i] = ztoc.FileMetadata{
			Name: e.Name, Type: e.Type, UncompressedOffset: e.UncompressedOffset,
			UncompressedSize: e.UncompressedSize, Linkname: e.Linkname, Mode: e.Mode,
			UID: e.UID, GID: e.GID, Uname: e.Uname, Gname: e.Gname, ModTime: mt,
			Devmajor: e.Devmajor, Devminor: e.Devminor, PAXRecords: e.PAXRecords,
		}
	}
	return out
}

// uncompressed returns the tar bytes of a layer blob.
func uncompressed(t testing.TB, blob []byte) []byte {
	t.Helper()
	if len(blob) < 2 || blob[0] != 0x1f || blob[1] != 0x8b {
		return blob
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// tocFromTar lists a tar's entries as the zTOC builder does: it is the
// builder, run over the uncompressed tar.
func tocFromTar(t testing.TB, tarBytes []byte) []ztoc.FileMetadata {
	t.Helper()
	z, err := ztoc.Build(context.Background(), bytes.NewReader(tarBytes), ztoc.BuildOptions{})
	if err != nil {
		t.Fatalf("build zTOC: %v", err)
	}
	return z.TOC
}

// tarEntry describes one entry for makeTar.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	xattrs     map[string]string
}

// makeTar writes a tar with PAX headers (nanosecond times, xattrs).
func makeTar(t testing.TB, es []tarEntry) []byte {
	t.Helper()
	files := make([]ztoctest.File, len(es))
	for i, e := range es {
		files[i] = ztoctest.File{Name: e.name, Linkname: e.link, Type: e.typ, Mode: e.mode,
			Body: []byte(e.body), Xattrs: e.xattrs}
	}
	return ztoctest.Layer(t, files, ztoctest.LayerOptions{})
}

// fileInfo is what a user sees of one name: everything the comparison with
// GNU tar's extraction checks.
type fileInfo struct {
	Type     string
	Perm     uint32 // permissions with setuid, setgid, sticky
	UID, GID uint32
	Mtime    int64 // ns; 0 when not compared
	Size     int64 // regular files and symlinks
	Nlink    uint64
	Rdev     uint64
	Link     string
	Content  string // sha256 of a regular file
	Xattrs   string // sorted "name=value" list
}

func (f fileInfo) String() string {
	return fmt.Sprintf("%s %04o %d:%d mtime=%d size=%d nlink=%d rdev=%d link=%q sha=%.12s xattrs=[%s]",
		f.Type, f.Perm, f.UID, f.GID, f.Mtime, f.Size, f.Nlink, f.Rdev, f.Link, f.Content, f.Xattrs)
}

// scanTree describes every name under root (root itself excluded).
func scanTree(t testing.TB, root string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := describe(p)
		out[rel] = fi
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func describe(p string) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fileInfo{}, err
	}
	fi := fileInfo{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Mtime: st.Mtim.Nano(), Nlink: uint64(st.Nlink)}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fi.Type = "dir"
	case unix.S_IFREG:
		fi.Type, fi.Size = "reg", st.Size
		fi.Content, err = hashFile(p)
	case unix.S_IFLNK:
		fi.Type, fi.Size = "symlink", st.Size
		fi.Link, err = os.Readlink(p)
	case unix.S_IFCHR:
		fi.Type, fi.Rdev = "char", st.Rdev
	case unix.S_IFBLK:
		fi.Type, fi.Rdev = "block", st.Rdev
	case unix.S_IFIFO:
		fi.Type = "fifo"
	default:
		fi.Type = fmt.Sprintf("mode%o", st.Mode)
	}
	if err != nil {
		return fi, err
	}
	fi.Xattrs, err = xattrList(p)
	return fi, err
}

func hashFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), err
}

func xattrList(p string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS) {
			return "", nil
		}
		return "", fmt.Errorf("listxattr %s: %w", p, err)
	}
	var kv []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		vb := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, vb)
		if errors.Is(err, unix.EINVAL) {
			// The kernel validates security.capability on the way out
			// and refuses malformed values; record the refusal.
			kv = append(kv, name+"=EINVAL")
			continue
		}
		if err != nil {
			return "", fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		kv = append(kv, fmt.Sprintf("%s=%q", name, vb[:vn]))
	}
	sort.Strings(kv)
	return strings.Join(kv, ","), nil
}

// diffTrees reports every difference between want and got.
func diffTrees(t testing.TB, want, got map[string]fileInfo) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		w, wok := want[n]
		g, gok := got[n]
		switch {
		case !gok:
			t.Errorf("%s: missing from mount; want %v", n, w)
		case !wok:
			t.Errorf("%s: unexpected in mount: %v", n, g)
		case w != g:
			t.Errorf("%s:\n mount %v\n want  %v", n, g, w)
		}
	}
}
