package cache

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// ReadAt reads up to len(p) bytes of key's value starting at off. It
// returns io.EOF (with n < len(p)) when the value ends first, as
// io.ReaderAt does. It verifies the checksum of every block it touches; a
// missing, corrupt or truncated file yields an error wrapping ErrCacheMiss,
// and a corrupt file is removed so the next Put replaces it.
func (c *Cache) ReadAt(key string, p []byte, off int64) (int, error) {
	e, err := c.lookup(key)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("cache read %q: negative offset %d", key, off)
	}
	if off >= e.dataLen {
		return 0, io.EOF
	}
	n, err := c.readVerified(e, p, off)
	if errors.Is(err, errCorrupt) || errors.Is(err, os.ErrNotExist) || errors.Is(err, io.ErrUnexpectedEOF) {
		if !errors.Is(err, os.ErrNotExist) {
			c.dropCorrupt(e)
		}
		return 0, fmt.Errorf("cache read %q: %v: %w", key, err, ErrCacheMiss)
	}
	if err != nil {
		return 0, fmt.Errorf("cache read %q: %w", key, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// lookup finds key's entry and marks it recently used.
func (c *Cache) lookup(key string) (*entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cache read %q: %w", key, ErrClosed)
	}
	el, ok := c.entries[key]
	if !ok {
		return nil, fmt.Errorf("cache read %q: %w", key, ErrCacheMiss)
	}
	c.lru.MoveToFront(el)
	return el.Value.(*entry), nil
}

// dropCorrupt removes e (if it is still the indexed value for its key) and
// its file, and counts the corruption.
func (c *Cache) dropCorrupt(e *entry) {
	c.mu.Lock()
	el, ok := c.entries[e.key]
	current := ok && el.Value.(*entry) == e
	if current {
		c.dropLocked(el)
	}
	c.stats.Corruptions++
	c.mu.Unlock()
	if current {
		removeFiles([]string{e.path})
	}
}

// maxPooledRead bounds the block-aligned buffers kept for reuse: FUSE reads
// are at most 128 KiB, plus a block on each side.
const maxPooledRead = 256 << 10

// maxFreeScratch bounds how many read buffers are kept (at most 1 MiB):
// enough for the reads a FUSE server runs at once.
const maxFreeScratch = 4

// scratch returns a buffer of n bytes for readVerified and the func that
// gives it back. A small-file read touches a block or two, and a daemon
// serving many of them from the cache allocated the blocks afresh each
// time: most of its garbage, and so of its peak heap. (A sync.Pool would
// do, but drops buffers at random under the race detector, which makes the
// reuse untestable there.)
func (c *Cache) scratch(n int64) ([]byte, func()) {
	if n > maxPooledRead {
		return make([]byte, n), func() {}
	}
	c.scratchMu.Lock()
	var b []byte
	if k := len(c.freeScratch); k > 0 {
		b, c.freeScratch = c.freeScratch[k-1], c.freeScratch[:k-1]
	}
	c.scratchMu.Unlock()
	if b == nil {
		b = make([]byte, maxPooledRead)
	}
	return b[:n], func() {
		c.scratchMu.Lock()
		if len(c.freeScratch) < maxFreeScratch {
			c.freeScratch = append(c.freeScratch, b)
		}
		c.scratchMu.Unlock()
	}
}

// readVerified reads the blocks covering [off, off+len(p)) ∩ data, checks
// their CRCs and copies the requested bytes into p.
func (c *Cache) readVerified(e *entry, p []byte, off int64) (int, error) {
	f, err := os.Open(e.path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() != e.fileSize {
		return 0, fmt.Errorf("file is %d bytes, expected %d: %w", st.Size(), e.fileSize, errCorrupt)
	}
	end := min(off+int64(len(p)), e.dataLen)
	first, last := off/e.blockSize, (end-1)/e.blockSize
	bufStart := first * e.blockSize
	bufEnd := min((last+1)*e.blockSize, e.dataLen)
	buf, done := c.scratch(bufEnd - bufStart)
	defer done()
	if _, err := f.ReadAt(buf, bufStart); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	for b := first; b <= last; b++ {
		lo := b*e.blockSize - bufStart
		hi := min(lo+e.blockSize, int64(len(buf)))
		if crc32.Checksum(buf[lo:hi], castagnoli) != e.crcs[b] {
			return 0, fmt.Errorf("block %d checksum mismatch: %w", b, errCorrupt)
		}
	}
	return copy(p, buf[off-bufStart:end-bufStart]), nil
}

// readIndexEntry reads an entry file's footer and trailer (not its data) to
// rebuild the index at start.
func readIndexEntry(path string) (*entry, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	e, err := parseEntry(f, st.Size())
	if err != nil {
		return nil, 0, err
	}
	e.path = path
	return e, st.ModTime().UnixNano(), nil
}

// parseEntry decodes the footer and trailer of an entry file of size bytes.
func parseEntry(r io.ReaderAt, size int64) (*entry, error) {
	if size < footerSize {
		return nil, fmt.Errorf("file too short: %w", errCorrupt)
	}
	fb := make([]byte, footerSize)
	if _, err := r.ReadAt(fb, size-footerSize); err != nil {
		return nil, err
	}
	ft, err := decodeFooter(fb, size)
	if err != nil {
		return nil, err
	}
	tail := make([]byte, size-ft.dataLen)
	if _, err := r.ReadAt(tail, ft.dataLen); err != nil {
		return nil, err
	}
	key, crcs, err := decodeTrailer(tail, ft)
	if err != nil {
		return nil, err
	}
	return &entry{key: key, fileSize: size, dataLen: ft.dataLen, blockSize: ft.blockSize, crcs: crcs}, nil
}
