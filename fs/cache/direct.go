package cache

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct I/O for values. A value written through the page cache costs the
// CPU a copy into freshly allocated page-cache pages, then their writeback:
// on the 2-core machine the benchmarks run on that was 1.4 ms per MiB, a
// quarter of all the CPU a cold sequential read through FUSE used, as much
// as inflating. Written with O_DIRECT the bytes go from the span buffer to
// the disk without that copy (0.17 ms per MiB measured with dd). The price
// is that the first read of a value after it left the span layer's memory
// comes from the disk rather than the page cache; reads of a span just
// fetched are served from memory anyway.
//
// O_DIRECT needs the buffer address, the file offset and the length aligned
// to the device's logical block size; directAlign covers 512 and 4096. The
// span layer's buffers are page-aligned mappings. The unaligned tail of a
// value and the trailer are written through the page cache. A filesystem
// that refuses O_DIRECT (EINVAL) gets buffered writes from then on.

// directAlign is the alignment of direct writes.
const directAlign = 4096

// directMin is the smallest value worth a direct write: a second open and a
// synchronous device write cost more than copying a few pages.
const directMin = 256 << 10

// directLen returns how many leading bytes of data to write directly: none
// when direct I/O is off or refused, data is small or not aligned in memory.
func (c *Cache) directLen(data []byte) int64 {
	if c.cfg.buffered || c.noDirect.Load() || len(data) < directMin {
		return 0
	}
	// Alignment of the memory itself, as O_DIRECT needs; the pointer is
	// only inspected, never kept.
	if uintptr(unsafe.Pointer(unsafe.SliceData(data)))%directAlign != 0 {
		return 0
	}
	return int64(len(data)) &^ (directAlign - 1)
}

// writeDirect writes p at offset 0 of the file at path with O_DIRECT. It
// reports false, with no error and nothing written, when the filesystem
// does not do direct I/O.
func writeDirect(path string, p []byte) (bool, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open for direct write: %w", err)
	}
	defer unix.Close(fd)
	for off := 0; off < len(p); {
		n, err := unix.Pwrite(fd, p[off:], int64(off))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL) && off == 0:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("direct write at %d: %w", off, err)
		case n == 0:
			return false, fmt.Errorf("direct write at %d: %w", off, unix.EIO)
		}
		off += n
	}
	return true, nil
}
