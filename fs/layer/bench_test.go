package layer

import (
	"archive/tar"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/ztoc"
)

// extractTar unpacks a tar with GNU tar as root (owners, modes, times kept).
func extractTar(b *testing.B, tarBytes []byte) string {
	b.Helper()
	src := filepath.Join(b.TempDir(), "layer.tar")
	if err := os.WriteFile(src, tarBytes, 0o600); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if out, err := exec.Command("tar", "-xpf", src, "--numeric-owner", "-C", dir).CombinedOutput(); err != nil {
		b.Fatalf("tar: %v\n%s", err, out)
	}
	return dir
}

// containerView mounts overlayfs over lower the way a container's rootfs is
// mounted: the layer as lowerdir, a fresh upper and work dir on local disk.
func containerView(b *testing.B, lower string) string {
	b.Helper()
	upper, work, mnt := b.TempDir(), b.TempDir(), b.TempDir()
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := syscall.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		b.Fatalf("mount overlay: %v", err)
	}
	b.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	return mnt
}

// walk is find(1) with -ls: readdir every directory, lstat every name.
func walk(root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

func timedWalk(b *testing.B, root string, want int) time.Duration {
	start := time.Now()
	n, err := walk(root)
	if err != nil || n != want {
		b.Fatalf("walk %s: %d entries, %v; want %d", root, n, err, want)
	}
	return time.Since(start)
}

// BenchmarkWalk20k walks a 20k-entry layer mounted over FUSE and the same
// layer extracted on local disk, each bare and under overlayfs as a
// container sees it. It reports the FUSE/local time ratios (target: ≤ 2 for
// the overlay views) and the first walk of the fresh mount, when every
// entry is a round trip to the server.
func BenchmarkWalk20k(b *testing.B) {
	var es []tarEntry
	for d := range 200 {
		es = append(es, tarEntry{name: fmt.Sprintf("d%03d/", d), typ: tar.TypeDir, mode: 0o755})
		for f := range 100 {
			es = append(es, tarEntry{name: fmt.Sprintf("d%03d/f%03d", d, f), typ: tar.TypeReg,
				mode: 0o644, body: "0123456789abcdef"})
		}
	}
	tb := makeTar(b, es)
	want := len(es) + 1 // and the root
	fuseMnt := mountTree(b, tocFromTar(b, tb), newMemReader(tb), Options{})
	local := extractTar(b, tb)
	fuseOv, localOv := containerView(b, fuseMnt), containerView(b, local)

	first := timedWalk(b, fuseMnt, want)
	timedWalk(b, fuseOv, want) // warm the overlay's own dentries too
	timedWalk(b, localOv, want)
	var tLocal, tFuse, tLocalOv, tFuseOv time.Duration
	b.ResetTimer()
	for range b.N {
		tLocal += timedWalk(b, local, want)
		tFuse += timedWalk(b, fuseMnt, want)
		tLocalOv += timedWalk(b, localOv, want)
		tFuseOv += timedWalk(b, fuseOv, want)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(float64(tFuseOv)/float64(tLocalOv), "overlay-fuse/overlay-local")
	b.ReportMetric(float64(tFuse)/float64(tLocal), "fuse/local")
	b.ReportMetric(ms(tLocalOv), "overlay-local-ms")
	b.ReportMetric(ms(tFuseOv), "overlay-fuse-ms")
	b.ReportMetric(float64(first)/1e6, "fuse-first-walk-ms")
}

// localReader is a Reader whose files are all on local disk: it offers each
// file for FUSE passthrough, as the span layer does once a file is cached.
type localReader struct {
	memReader
	path string // the single file's bytes
}

func (l localReader) LocalFile(ctx context.Context, e *ztoc.FileMetadata) (*os.File, bool) {
	f, err := os.Open(l.path)
	return f, err == nil
}

// readAll reads the whole file at path through f, or through a fresh open
// of path when f is nil.
func readAll(b *testing.B, path string, f *os.File, buf []byte) time.Duration {
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

// BenchmarkWarmReread reads a 64 MiB file whose pages are already cached,
// from local disk, from the mount (served by a Reader), and from the mount
// with the file on local disk offered for FUSE passthrough; each both
// through a descriptor held open and with an open/close per read (which
// costs FUSE round trips). It reports throughput ratios against local disk
// (target: >= 0.9).
func BenchmarkWarmReread(b *testing.B) {
	const size = 64 << 20
	body := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	tb := makeTar(b, []tarEntry{{name: "big", typ: tar.TypeReg, mode: 0o644, body: string(body)}})
	toc := tocFromTar(b, tb)
	dir := b.TempDir()
	local, backing := filepath.Join(dir, "local"), filepath.Join(dir, "backing")
	for _, p := range []string{local, backing} {
		if err := os.WriteFile(p, body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	paths := []string{local,
		filepath.Join(mountTree(b, toc, newMemReader(tb), Options{}), "big"),
		filepath.Join(mountTree(b, toc, localReader{newMemReader(tb), backing}, Options{}), "big")}
	held := make([]*os.File, len(paths))
	buf := make([]byte, 1<<20)
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		held[i] = f
		readAll(b, p, f, buf) // warm the page cache
	}
	var tHeld, tOpen [3]time.Duration
	b.SetBytes(2 * size)
	b.ResetTimer()
	for range b.N {
		for i, p := range paths {
			tHeld[i] += readAll(b, p, held[i], buf)
			tOpen[i] += readAll(b, p, nil, buf)
		}
	}
	ratio := func(t [3]time.Duration, i int) float64 { return float64(t[0]) / float64(t[i]) }
	b.ReportMetric(ratio(tHeld, 1), "reader/local")
	b.ReportMetric(ratio(tHeld, 2), "passthrough/local")
	b.ReportMetric(ratio(tOpen, 1), "reader-open/local-open")
	b.ReportMetric(ratio(tOpen, 2), "passthrough-open/local-open")
	b.ReportMetric(float64(size)*float64(b.N)/tHeld[0].Seconds()/1e6, "local-MB/s")
}

// heapInUse is the live heap; two collections, so that objects parked in
// sync.Pools (go-fuse's buffers) by an earlier mount are gone too.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkTreeMemory reports the heap a 20k-entry layer costs: the model
// New builds, and the go-fuse inodes OnAdd adds when it is mounted. The
// TOC itself (owned by the caller) is not counted.
func BenchmarkTreeMemory(b *testing.B) {
	const dirs, files = 200, 100
	toc := make([]ztoc.FileMetadata, 0, dirs*(files+1))
	for d := range dirs {
		toc = append(toc, ztoc.FileMetadata{Name: fmt.Sprintf("usr/lib/d%03d/", d), Type: ztoc.TypeDir, Mode: 0o755})
		for f := range files {
			toc = append(toc, ztoc.FileMetadata{Name: fmt.Sprintf("usr/lib/d%03d/lib%03d.so", d, f),
				Type: ztoc.TypeReg, Mode: 0o644, UncompressedSize: 4096})
		}
	}
	var model, inodes int64
	for range b.N {
		base := heapInUse()
		root, err := New(toc, newMemReader(nil), Options{})
		if err != nil {
			b.Fatal(err)
		}
		built := heapInUse()
		mnt := b.TempDir()
		srv, err := Mount(mnt, root, MountOptions{})
		if err != nil {
			b.Fatal(err)
		}
		mounted := heapInUse()
		if err := srv.Unmount(); err != nil {
			b.Fatal(err)
		}
		srv.Wait()
		model += built - base
		inodes += mounted - built
	}
	n := float64(b.N) * float64(len(toc))
	b.ReportMetric(float64(model)/n, "model-B/entry")
	b.ReportMetric(float64(inodes)/n, "inodes-B/entry")
}

// BenchmarkColdRead reads a 64 MiB file with its pages dropped before each
// pass, so every byte crosses FUSE from an in-memory Reader: the ceiling
// the tree puts on the span layer. The baseline is the same bytes read
// from the Reader directly in MaxRead chunks.
func BenchmarkColdRead(b *testing.B) {
	const size = 64 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	tb := makeTar(b, []tarEntry{{name: "big", typ: tar.TypeReg, mode: 0o644, body: string(body)}})
	toc := tocFromTar(b, tb)
	r := newMemReader(tb)
	f, err := os.Open(filepath.Join(mountTree(b, toc, r, Options{}), "big"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, DefaultMaxRead)
	var tDirect, tFuse time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for off := int64(0); off < size; off += DefaultMaxRead {
			if _, err := r.ReadAt(context.Background(), buf, toc[0].UncompressedOffset+off); err != nil {
				b.Fatal(err)
			}
		}
		tDirect += time.Since(start)
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		tFuse += readAll(b, "", f, buf)
	}
	b.ReportMetric(float64(size)*float64(b.N)/tFuse.Seconds()/1e6, "fuse-MB/s")
	b.ReportMetric(float64(tDirect)/float64(tFuse), "fuse/direct")
}
