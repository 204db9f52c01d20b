package cache

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// alignedBytes returns n bytes of data in a page-aligned mapping, as the
// span layer's buffers are.
func alignedBytes(t *testing.T, seed uint64, n int) []byte {
	t.Helper()
	m, err := unix.Mmap(-1, 0, (n+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	copy(m, randBytes(seed, n))
	return m[:n]
}

// TestDirectWrites stores values of which the aligned bulk goes through
// direct I/O (page-aligned memory) and values that cannot (unaligned, small),
// with direct I/O on and off, and reads every one back whole and at its
// unaligned tail, across a reopen of the cache.
func TestDirectWrites(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		dir := t.TempDir()
		var opts []Opt
		if buffered {
			opts = append(opts, WithBufferedWrites())
		}
		c := newCache(t, dir, opts...)
		values := map[string][]byte{
			"aligned":   alignedBytes(t, 1, 4<<20+1234),
			"exact":     alignedBytes(t, 2, 1<<20),
			"unaligned": alignedBytes(t, 3, 1<<20+99)[7:],
			"small":     alignedBytes(t, 4, 5000),
		}
		for k, v := range values {
			if err := c.Put(k, v); err != nil {
				t.Fatalf("buffered=%v: put %s: %v", buffered, k, err)
			}
		}
		if c.noDirect.Load() {
			t.Logf("the filesystem of %s refused O_DIRECT: every write was buffered", dir)
		}
		check := func(c *Cache) {
			for k, v := range values {
				got, err := readAll(t, c, k, len(v))
				if err != nil || !bytes.Equal(got, v) {
					t.Errorf("buffered=%v: %s read back: %d bytes, %v", buffered, k, len(got), err)
				}
				tail := make([]byte, 300)
				off := int64(len(v) - len(tail))
				if n, err := c.ReadAt(k, tail, off); n != len(tail) || (err != nil && n != len(tail)) || !bytes.Equal(tail, v[off:]) {
					t.Errorf("buffered=%v: %s tail: %d bytes, %v", buffered, k, n, err)
				}
			}
		}
		check(c)
		c.Close()
		check(newCache(t, dir, opts...))
	}
}
