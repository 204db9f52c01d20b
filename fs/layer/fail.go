package layer

import (
	"encoding/binary"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Opcodes that expect no reply (include/uapi/linux/fuse.h).
const (
	opForget      = 2
	opInterrupt   = 36
	opBatchForget = 42
)

// failReadBuffer is the read buffer of Fail: the kernel refuses a read
// into a buffer smaller than its largest request (a header and max_write
// bytes), and max_write is at most the kernel's page limit (256 pages by
// default, raised through /proc/sys/fs/fuse/max_pages_limit).
const failReadBuffer = 16<<20 + 4096

// Fail serves dev, a connection whose layer cannot be served any more,
// with EIO for every request, in a goroutine, until the connection ends
// (unmounted and its last file closed, or aborted); requests in flight
// when its server died are resent first (Resend), so none is left
// waiting. It then closes dev.
func Fail(dev *os.File) error {
	if err := Resend(dev); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	go func() {
		defer dev.Close()
		buf := make([]byte, failReadBuffer)
		fd := int(dev.Fd())
		for {
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
				continue // ENOENT: the request was interrupted before we read it
			}
			if err != nil {
				return // ENODEV: the connection ended
			}
			if n < 40 {
				continue
			}
			switch binary.NativeEndian.Uint32(buf[4:]) {
			case opForget, opBatchForget, opInterrupt:
				continue
			}
			var out [16]byte
			binary.NativeEndian.PutUint32(out[0:], uint32(len(out)))
			errno := -int32(unix.EIO)
			binary.NativeEndian.PutUint32(out[4:], uint32(errno))
			copy(out[8:], buf[8:16]) // unique
			_, _ = unix.Write(fd, out[:])
		}
	}()
	return nil
}
