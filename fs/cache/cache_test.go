package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newCache(t *testing.T, dir string, opts ...Opt) *Cache {
	t.Helper()
	c, err := New(dir, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(t *testing.T, c *Cache, key string, n int) ([]byte, error) {
	t.Helper()
	p := make([]byte, n)
	got, err := c.ReadAt(key, p, 0)
	if err == io.EOF && got == n {
		err = nil
	}
	return p[:got], err
}

func TestPutReadRanges(t *testing.T) {
	c := newCache(t, t.TempDir(), WithBlockSize(1024))
	data := randBytes(1, 10_000)
	if err := c.Put("sha256:abc/0", data); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ off, n int }{{0, 10_000}, {0, 1}, {1023, 2}, {5000, 3000}, {9_999, 1}, {1024, 1024}}
	for _, tc := range cases {
		p := make([]byte, tc.n)
		n, err := c.ReadAt("sha256:abc/0", p, int64(tc.off))
		if err != nil && !(err == io.EOF && tc.off+tc.n == len(data)) {
			t.Fatalf("ReadAt(%d,%d): %v", tc.off, tc.n, err)
		}
		if n != tc.n || !bytes.Equal(p, data[tc.off:tc.off+tc.n]) {
			t.Fatalf("ReadAt(%d,%d): wrong bytes (n=%d)", tc.off, tc.n, n)
		}
	}
	// A read running past the end returns what exists and io.EOF.
	p := make([]byte, 100)
	n, err := c.ReadAt("sha256:abc/0", p, 9_950)
	if n != 50 || err != io.EOF || !bytes.Equal(p[:n], data[9_950:]) {
		t.Fatalf("read past end: n=%d err=%v", n, err)
	}
	if _, err := c.ReadAt("sha256:abc/0", p, 10_000); err != io.EOF {
		t.Fatalf("read at end: %v", err)
	}
	if _, err := c.ReadAt("missing", p, 0); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("missing key: %v", err)
	}
}

func TestEmptyValue(t *testing.T) {
	c := newCache(t, t.TempDir())
	if err := c.Put("empty", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt("empty", make([]byte, 1), 0); err != io.EOF {
		t.Fatalf("read of empty value: %v", err)
	}
}

func TestLRUBound(t *testing.T) {
	// Each value is 4000 bytes plus a small trailer; the bound fits three.
	c := newCache(t, t.TempDir(), WithMaxBytes(3*4100), WithBlockSize(1024))
	for i := range 3 {
		if err := c.Put(fmt.Sprint(i), randBytes(uint64(i), 4000)); err != nil {
			t.Fatal(err)
		}
	}
	// Touch 0 so 1 is the least recently used.
	if _, err := readAll(t, c, "0", 4000); err != nil {
		t.Fatal(err)
	}
	if err := c.Put("3", randBytes(3, 4000)); err != nil {
		t.Fatal(err)
	}
	if c.Has("1") || !c.Has("0") || !c.Has("2") || !c.Has("3") {
		t.Fatalf("wrong entry evicted: 0=%v 1=%v 2=%v 3=%v", c.Has("0"), c.Has("1"), c.Has("2"), c.Has("3"))
	}
	st := c.Stats()
	if st.Bytes > 3*4100 || st.Entries != 3 || st.Evictions != 1 {
		t.Fatalf("stats after eviction: %+v", st)
	}
	files, _ := os.ReadDir(c.Dir())
	if len(files) != 3 {
		t.Fatalf("%d files on disk, want 3", len(files))
	}
	if err := c.Put("huge", make([]byte, 20_000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized put: %v", err)
	}
}

// corruptions lists ways a file can go bad on disk; each must read as a miss.
// (A damaged footer alone is caught when the index is rebuilt from the files,
// see TestReloadAfterRestart: while running, the index holds the checksums.)
var corruptions = map[string]func(path string) error{
	"flipped data byte": func(p string) error { return flip(p, 5000) },
	"truncated": func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		return os.Truncate(p, st.Size()-100)
	},
	"emptied": func(p string) error { return os.Truncate(p, 0) },
	"removed": os.Remove,
}

func flip(path string, off int64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x40
	return os.WriteFile(path, b, 0o600)
}

func TestCorruptFileIsMiss(t *testing.T) {
	for name, damage := range corruptions {
		t.Run(name, func(t *testing.T) {
			c := newCache(t, t.TempDir(), WithBlockSize(1024))
			data := randBytes(7, 8000)
			if err := c.Put("k", data); err != nil {
				t.Fatal(err)
			}
			if err := damage(filepath.Join(c.Dir(), fileName("k"))); err != nil {
				t.Fatal(err)
			}
			if _, err := readAll(t, c, "k", len(data)); !errors.Is(err, ErrCacheMiss) {
				t.Fatalf("read of damaged file: %v, want ErrCacheMiss", err)
			}
			if c.Has("k") && name != "removed" {
				t.Fatal("corrupt entry still indexed")
			}
			// Fetch again: the value is stored afresh and reads back.
			if err := c.Put("k", data); err != nil {
				t.Fatal(err)
			}
			if got, err := readAll(t, c, "k", len(data)); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("re-put read: %v", err)
			}
		})
	}
}

func TestReloadAfterRestart(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, dir, WithBlockSize(1024))
	values := map[string][]byte{}
	for i := range 5 {
		k := fmt.Sprintf("sha256:%d/%d", i, i)
		values[k] = randBytes(uint64(i), 3000+i)
		if err := c.Put(k, values[k]); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	// Debris a crash could leave: a temp file and a torn entry file.
	os.WriteFile(filepath.Join(dir, tempPrefix+"123"), []byte("partial"), 0o600)
	if err := flip(filepath.Join(dir, fileName("sha256:0/0")), -20); err != nil {
		t.Fatal(err)
	}
	c2 := newCache(t, dir)
	if st := c2.Stats(); st.Entries != 4 || st.Corruptions != 1 {
		t.Fatalf("reloaded stats %+v, want 4 entries and 1 corruption", st)
	}
	if _, err := os.Stat(filepath.Join(dir, tempPrefix+"123")); !os.IsNotExist(err) {
		t.Fatalf("temp file not cleaned: %v", err)
	}
	for k, v := range values {
		got, err := readAll(t, c2, k, len(v))
		if k == "sha256:0/0" {
			if !errors.Is(err, ErrCacheMiss) {
				t.Fatalf("torn entry: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("reloaded %s: %v", k, err)
		}
	}
}

func TestClosed(t *testing.T) {
	c := newCache(t, t.TempDir())
	c.Close()
	if err := c.Put("k", []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if _, err := c.ReadAt("k", make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// TestFullDisk writes into a tiny tmpfs: Put fails with ENOSPC, no partial
// file is left and nothing corrupt is ever served.
func TestFullDisk(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	c := newCache(t, dir)
	err := c.Put("big", make([]byte, 1<<20))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("put on full disk: %v, want ENOSPC", err)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("full disk left %d files", len(files))
	}
	if _, err := c.ReadAt("big", make([]byte, 1), 0); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("read after failed put: %v", err)
	}
	if err := c.Put("small", []byte("fits")); err != nil {
		t.Fatalf("small put after ENOSPC: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	c := newCache(t, t.TempDir(), WithMaxBytes(40_000), WithBlockSize(1024))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := fmt.Sprint((g + i) % 16)
				v := randBytes(uint64((g+i)%16), 5000)
				if i%3 == 0 {
					if err := c.Put(k, v); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				got, err := readAll(t, c, k, len(v))
				if errors.Is(err, ErrCacheMiss) {
					continue
				}
				if err != nil || !bytes.Equal(got, v) {
					t.Errorf("read %s: %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := c.Stats(); st.Bytes > 40_000 || st.Corruptions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// FuzzEntryFile feeds arbitrary file contents to the loader: it must reject
// or accept them without panicking, and anything accepted must read back
// only bytes whose checksums match.
func FuzzEntryFile(f *testing.F) {
	key := "sha256:seed/1"
	data := randBytes(3, 700)
	crcs := blockCRCs(data, 512)
	good := append(append([]byte{}, data...), encodeTrailer(key, 700, 512, crcs)...)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseEntry(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if e.fileSize != int64(len(b)) || e.dataLen > int64(len(b)) || int64(len(e.crcs)) != numBlocks(e.dataLen, e.blockSize) {
			t.Fatalf("accepted inconsistent entry %+v for %d bytes", e, len(b))
		}
	})
}

// TestReadReusesBlocks checks that a small read does not allocate the
// blocks it verifies afresh each time: a daemon serving many small files
// from the cache made most of its garbage that way.
func TestReadReusesBlocks(t *testing.T) {
	c := newCache(t, t.TempDir())
	data := randBytes(3, 1<<20)
	if err := c.Put("k", data); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	if _, err := c.ReadAt("k", p, 100_000); err != nil || !bytes.Equal(p, data[100_000:100_000+4096]) {
		t.Fatalf("first read: %v", err)
	}
	// Opening the file allocates a few small objects; the 32 KiB block
	// the read touches must not be one of them.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := c.ReadAt("k", p, 100_000); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 8<<10 {
		t.Fatalf("a 4 KiB read allocates %d bytes", per)
	}
}
