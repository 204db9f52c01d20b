package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// failingReader fails reads that touch [badFrom, badTo) and returns short
// reads (with no error) at shortAt; other reads go to the tar in memory.
type failingReader struct {
	memReader
	badFrom, badTo, shortAt int64
}

func (f failingReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	switch {
	case off < f.badTo && off+int64(len(p)) > f.badFrom:
		return 0, errors.New("span digest mismatch (test)")
	case off == f.shortAt:
		return len(p) / 2, nil
	}
	return f.memReader.ReadAt(ctx, p, off)
}

func entryNamed(t *testing.T, toc []ztoc.FileMetadata, name string) ztoc.FileMetadata {
	t.Helper()
	for _, e := range toc {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no entry %q", name)
	return ztoc.FileMetadata{}
}

func TestReadErrorsAreEIO(t *testing.T) {
	tb := makeTar(t, []tarEntry{
		{name: "bad", typ: tar.TypeReg, mode: 0o644, body: "bad bytes"},
		{name: "short", typ: tar.TypeReg, mode: 0o644, body: "short read"},
		{name: "good", typ: tar.TypeReg, mode: 0o644, body: "good bytes"},
	})
	toc := tocFromTar(t, tb)
	bad, short := entryNamed(t, toc, "bad"), entryNamed(t, toc, "short")
	r := failingReader{memReader: newMemReader(tb), badFrom: bad.UncompressedOffset,
		badTo: bad.UncompressedOffset + 1, shortAt: short.UncompressedOffset}
	mnt := mountTree(t, toc, r, Options{})

	for _, name := range []string{"bad", "short"} {
		if _, err := os.ReadFile(filepath.Join(mnt, name)); !errors.Is(err, syscall.EIO) {
			t.Errorf("read %s: %v, want EIO", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "good")); err != nil || string(b) != "good bytes" {
		t.Errorf("read good = %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "good"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write: %v, want EROFS", err)
	}
}

// verifyingReader fails verification of "tampered" always and of "flaky"
// the first time, and counts calls per name.
type verifyingReader struct {
	memReader
	mu    sync.Mutex
	calls map[string]int
}

func (v *verifyingReader) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls[e.Name]++
	if e.Name == "tampered" || e.Name == "flaky" && v.calls[e.Name] == 1 {
		return errors.New("tar header does not match the TOC (test)")
	}
	return nil
}

func TestVerifyOnFirstOpen(t *testing.T) {
	tb := makeTar(t, []tarEntry{
		{name: "ok", typ: tar.TypeReg, mode: 0o644, body: "ok"},
		{name: "h", typ: tar.TypeLink, link: "ok"},
		{name: "tampered", typ: tar.TypeReg, mode: 0o644, body: "evil"},
		{name: "flaky", typ: tar.TypeReg, mode: 0o644, body: "flaky"},
	})
	vr := &verifyingReader{memReader: newMemReader(tb), calls: map[string]int{}}
	mnt := mountTree(t, tocFromTar(t, tb), vr, Options{})

	for range 3 {
		for _, n := range []string{"ok", "h"} {
			if b, err := os.ReadFile(filepath.Join(mnt, n)); err != nil || string(b) != "ok" {
				t.Errorf("read %s = %q, %v", n, b, err)
			}
		}
		if _, err := os.ReadFile(filepath.Join(mnt, "tampered")); !errors.Is(err, syscall.EIO) {
			t.Errorf("open tampered: %v, want EIO", err)
		}
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "flaky")); !errors.Is(err, syscall.EIO) {
		t.Errorf("first open of flaky: %v, want EIO", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "flaky")); err != nil || string(b) != "flaky" {
		t.Errorf("second open of flaky = %q, %v; a failed check must be retried", b, err)
	}
	vr.mu.Lock()
	defer vr.mu.Unlock()
	if vr.calls["ok"] != 1 || vr.calls["tampered"] != 3 || vr.calls["flaky"] != 2 {
		t.Errorf("verify calls = %v, want ok:1 (hardlink shares it) tampered:3 flaky:2", vr.calls)
	}
}

// slowReader counts reads in flight, so the test can see the server serve
// them in parallel.
type slowReader struct {
	memReader
	inflight, peak, total atomic.Int64
}

func (s *slowReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.total.Add(1)
	for {
		old := s.peak.Load()
		if n <= old || s.peak.CompareAndSwap(old, n) {
			break
		}
	}
	time.Sleep(200 * time.Microsecond)
	return s.memReader.ReadAt(ctx, p, off)
}

// TestConcurrentReaders has 64 goroutines read random ranges of the mixed
// fixture's files, dropping the page cache between reads so that the reads
// reach the server.
func TestConcurrentReaders(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	tb := uncompressed(t, f.Layer(t))
	toc := fixtureTOC(t, &f)
	sr := &slowReader{memReader: newMemReader(tb)}
	mnt := mountTree(t, toc, sr, Options{})

	files := map[string][]byte{}
	for _, e := range toc {
		if e.Type == ztoc.TypeReg && e.UncompressedSize > 0 {
			// Later duplicates overwrite earlier ones, as in the tree.
			files[filepath.Clean(e.Name)] = tb[e.UncompressedOffset : e.UncompressedOffset+e.UncompressedSize]
		}
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 20 {
				name := names[rng.IntN(len(names))]
				if err := readRange(filepath.Join(mnt, name), files[name], rng); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if sr.peak.Load() < 2 {
		t.Errorf("at most %d read in flight over %d reads; want parallel serving", sr.peak.Load(), sr.total.Load())
	}
}

func readRange(path string, want []byte, rng *rand.Rand) error {
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// Drop this file's cached pages so the read goes to the server.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return err
	}
	off := rng.IntN(len(want))
	n := 1 + rng.IntN(min(len(want)-off, 256<<10))
	buf := make([]byte, n)
	got, err := unix.Pread(fd, buf, int64(off))
	if err != nil {
		return err
	}
	if got != n || !bytes.Equal(buf, want[off:off+n]) {
		return errors.New(path + ": wrong bytes")
	}
	return nil
}

// TestExecFromLayer runs a program and a script straight from the mount:
// exec maps the binary's pages through FUSE, and the interpreter line is
// read like any file.
//
// The programs are started by /bin/sh, never directly: the test process
// serves the mount, and exec'ing from it deadlocks (see the package doc).
func TestExecFromLayer(t *testing.T) {
	bin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no /bin/true: %v", err)
	}
	tb := makeTar(t, []tarEntry{
		{name: "bin/true", typ: tar.TypeReg, mode: 0o755, body: string(bin)},
		{name: "bin/hello", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\necho hello from the layer\n"},
		{name: "bin/noexec", typ: tar.TypeReg, mode: 0o644, body: "#!/bin/sh\n"},
	})
	mnt := mountTree(t, tocFromTar(t, tb), newMemReader(tb), Options{})
	run := func(name string) (string, error) {
		out, err := exec.Command("/bin/sh", "-c", `exec "$0" 2>&1`, filepath.Join(mnt, name)).Output()
		return string(out), err
	}
	if out, err := run("bin/true"); err != nil {
		t.Errorf("exec bin/true: %v %s", err, out)
	}
	if out, err := run("bin/hello"); err != nil || out != "hello from the layer\n" {
		t.Errorf("bin/hello = %q, %v", out, err)
	}
	var ee *exec.ExitError
	if out, err := run("bin/noexec"); !errors.As(err, &ee) || ee.ExitCode() != 126 {
		t.Errorf("exec of a 0644 file: %v %q, want exit 126 (permission denied)", err, out)
	}
}

// sizedLocal offers, for each file, a local copy: the right bytes for
// "good", a truncated copy for "short" (which must not be used).
type sizedLocal struct {
	memReader
	dir string
}

func (s sizedLocal) LocalFile(ctx context.Context, e *ztoc.FileMetadata) (*os.File, bool) {
	f, err := os.Open(filepath.Join(s.dir, e.Name))
	return f, err == nil
}

// TestPassthroughLocalFile reads files the Reader says are fully local:
// read(2) and mmap(2) see the right bytes, and a local copy whose size
// disagrees with the TOC is ignored in favour of the Reader.
func TestPassthroughLocalFile(t *testing.T) {
	good := bytes.Repeat([]byte("passthrough "), 100000)
	tb := makeTar(t, []tarEntry{
		{name: "good", typ: tar.TypeReg, mode: 0o755, body: string(good)},
		{name: "short", typ: tar.TypeReg, mode: 0o644, body: "from the reader"},
	})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "good"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "short"), []byte("from"), 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := mountTree(t, tocFromTar(t, tb), sizedLocal{newMemReader(tb), dir}, Options{})

	for range 2 {
		if b, err := os.ReadFile(filepath.Join(mnt, "good")); err != nil || !bytes.Equal(b, good) {
			t.Errorf("read good: %d bytes, %v", len(b), err)
		}
	}
	f, err := os.Open(filepath.Join(mnt, "good"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(good), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	if !bytes.Equal(m, good) {
		t.Errorf("mmap of good shows other bytes")
	}
	_ = unix.Munmap(m)
	if b, err := os.ReadFile(filepath.Join(mnt, "short")); err != nil || string(b) != "from the reader" {
		t.Errorf("read short = %q, %v", b, err)
	}
}

// TestMarkersAndAttrs checks what tools see beyond the tree walk: whiteout
// markers cannot be looked up, getxattr follows the getxattr(2) size
// protocol, symlinks read back, and statfs answers.
func TestMarkersAndAttrs(t *testing.T) {
	tb := makeTar(t, []tarEntry{
		{name: "d/", typ: tar.TypeDir, mode: 0o755},
		{name: "d/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		{name: "d/.wh.x", typ: tar.TypeReg, mode: 0o644},
		{name: "f", typ: tar.TypeReg, mode: 0o600, body: "f", xattrs: map[string]string{"user.k": "value"}},
		{name: "s", typ: tar.TypeSymlink, link: "../elsewhere"},
	})
	mnt := mountTree(t, tocFromTar(t, tb), newMemReader(tb), Options{})
	for _, n := range []string{"d/.wh..wh..opq", "d/.wh.x", "nothing"} {
		if _, err := os.Lstat(filepath.Join(mnt, n)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("lstat %s: %v, want ENOENT", n, err)
		}
	}
	f := filepath.Join(mnt, "f")
	if n, err := unix.Getxattr(f, "user.k", nil); err != nil || n != 5 {
		t.Errorf("getxattr size probe = %d, %v; want 5", n, err)
	}
	if _, err := unix.Getxattr(f, "user.k", make([]byte, 2)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into 2 bytes: %v, want ERANGE", err)
	}
	if _, err := unix.Getxattr(f, "user.none", make([]byte, 16)); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr of a missing name: %v, want ENODATA", err)
	}
	if l, err := os.Readlink(filepath.Join(mnt, "s")); err != nil || l != "../elsewhere" {
		t.Errorf("readlink = %q, %v", l, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: %v flags %#x, want read-only", err, st.Flags)
	}
}

// blockingVerifier blocks VerifyEntry until its context is cancelled,
// reporting the call and the cancellation.
type blockingVerifier struct {
	memReader
	called, cancelled chan struct{}
}

func (b blockingVerifier) VerifyEntry(ctx context.Context, e *ztoc.FileMetadata) error {
	close(b.called)
	select {
	case <-ctx.Done():
		close(b.cancelled)
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("never cancelled")
	}
}

// TestKillCancelsOpen kills a process blocked in open(2) on the mount and
// expects the kernel's interrupt to cancel the context the Verifier got:
// the FUSE request's context is what reaches the fetch. (Readahead READs
// are background requests the kernel never interrupts; a synchronous
// request such as this first open is.)
func TestKillCancelsOpen(t *testing.T) {
	tb := makeTar(t, []tarEntry{{name: "f", typ: tar.TypeReg, mode: 0o644, body: "f"}})
	bv := blockingVerifier{newMemReader(tb), make(chan struct{}), make(chan struct{})}
	mnt := mountTree(t, tocFromTar(t, tb), bv, Options{})

	cmd := exec.Command("cat", filepath.Join(mnt, "f"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bv.called:
	case <-time.After(10 * time.Second):
		t.Fatal("open never reached the verifier")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	select {
	case <-bv.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("killing the reader did not cancel the verifier's context")
	}
}

func TestMountErrors(t *testing.T) {
	requireFUSE(t)
	if _, err := New(nil, nil, Options{}); err == nil {
		t.Error("New with a nil Reader succeeded")
	}
	root, err := New(nil, newMemReader(nil), Options{})
	if err != nil {
		t.Fatalf("New of an empty layer: %v", err)
	}
	if root.Entries() != 0 || root.HasXattrs() {
		t.Errorf("empty layer: %d entries, xattrs %v", root.Entries(), root.HasXattrs())
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if srv, err := Mount(missing, root, MountOptions{}); err == nil {
		_ = srv.Unmount()
		t.Errorf("Mount on a missing directory succeeded")
	}
}

// TestSequentialReadRequestSize reads a file cold and checks that the
// kernel asked for it in MaxRead-sized requests, not 128 KiB ones: each
// request is a round trip to the span layer.
func TestSequentialReadRequestSize(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16)
	tb := makeTar(t, []tarEntry{{name: "big", typ: tar.TypeReg, mode: 0o644, body: string(body)}})
	sr := &slowReader{memReader: newMemReader(tb)}
	mnt := mountTree(t, tocFromTar(t, tb), sr, Options{})
	b, err := os.ReadFile(filepath.Join(mnt, "big"))
	if err != nil || !bytes.Equal(b, body) {
		t.Fatalf("read: %d bytes, %v", len(b), err)
	}
	if n := sr.total.Load(); n > 2*int64(len(body)/DefaultMaxRead) {
		t.Errorf("%d read requests for %d MiB; want about %d", n, len(body)>>20, len(body)/DefaultMaxRead)
	}
}
