package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is a regular file; its bytes are read through the layer's Reader.
type fileNode struct {
	attrNode
	r Reader

	// verifyMu serialises the first-open verification; verified is only
	// set once VerifyEntry has succeeded, so a failed check is retried.
	verifyMu sync.Mutex
	verified bool

	// The kernel keeps one I/O mode per inode: while any open of the
	// file uses FUSE passthrough, an open without it fails with EIO, and
	// the other way round (fs/fuse/iomode.c, iocachectr). So the open
	// handles are counted by kind and every new open joins the kind
	// already open; only an open with none of either asks the LocalFiler.
	// The kernel forgets a handle before it sends RELEASE, so these
	// counts are never below its own: at worst a new open keeps the old
	// kind a little longer, never mixes.
	openMu    sync.Mutex
	fuseOpens int      // handles read through this process
	openLocal int      // handles offered for passthrough
	local     *os.File // while openLocal > 0: the bytes on local disk, shared by those handles
	// fuseClosed is when the last handle read through this process was
	// released. go-fuse (v2.12.1, rawBridge.Release) drops a passthrough
	// reference of the node after our Release returns, for every handle,
	// passthrough or not: a passthrough open right after a FUSE-mode
	// release could have its backing file unregistered under it, and the
	// next passthrough open would then register a second one, which the
	// kernel refuses (EIO). So passthrough waits passthroughSettle after
	// the last FUSE-mode release.
	fuseClosed time.Time
}

// passthroughSettle is how long after a FUSE-mode handle's release the file
// is not offered for passthrough (see fileNode.fuseClosed). go-fuse's
// bookkeeping finishes microseconds after our Release returns; the margin
// covers a descheduled goroutine on a loaded node. A file opened through
// FUSE more often than this stays in FUSE mode, served from the page cache
// (FOPEN_KEEP_CACHE).
const passthroughSettle = 100 * time.Millisecond

var (
	_ = (fusefs.NodeOpener)((*fileNode)(nil))
	_ = (fusefs.NodeReader)((*fileNode)(nil))
	_ = (fusefs.NodeFlusher)((*fileNode)(nil))
)

// Flush answers ENOSYS, which tells the kernel never to send FLUSH again on
// this mount: nothing is ever written, so close(2) need not wait for a round
// trip to this process.
func (n *fileNode) Flush(ctx context.Context, f fusefs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Open refuses writes, verifies the file on its first open (when the Reader
// is a Verifier), and asks the kernel to keep cached pages across opens: the
// content never changes. The handle offers the file for FUSE passthrough when
// other passthrough handles are open, or when none of either kind is and the
// Reader, a LocalFiler, has the whole file on disk.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	if err := n.verify(ctx); err != nil {
		return nil, 0, n.toErrno(ctx, "verify", err)
	}
	h := n.openHandle(ctx)
	if o, ok := n.r.(OpenObserver); ok {
		o.Opened(n.m.entry, h.local != nil)
	}
	return h, fuse.FOPEN_KEEP_CACHE, fusefs.OK
}

// openHandle makes a handle of the kind the open handles have, counting it.
func (n *fileNode) openHandle(ctx context.Context) *handle {
	n.openMu.Lock()
	defer n.openMu.Unlock()
	h := &handle{node: n}
	if n.openLocal == 0 && n.fuseOpens == 0 && time.Since(n.fuseClosed) > passthroughSettle {
		n.local = n.localFile(ctx)
	}
	if n.local != nil && n.fuseOpens == 0 {
		h.local = n.local
		n.openLocal++
	} else {
		n.fuseOpens++
	}
	return h
}

// localFile asks the Reader for the file on local disk; nil when it has
// none, or one whose size disagrees with the TOC.
func (n *fileNode) localFile(ctx context.Context) *os.File {
	lf, ok := n.r.(LocalFiler)
	if !ok {
		return nil
	}
	f, ok := lf.LocalFile(ctx, n.m.entry)
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Size() != n.m.size {
		f.Close()
		return nil
	}
	return f
}

// closeHandle uncounts h; the last passthrough handle closes the local
// file (the kernel holds its own reference for as long as it needs one).
func (n *fileNode) closeHandle(h *handle) {
	n.openMu.Lock()
	defer n.openMu.Unlock()
	if h.local == nil {
		n.fuseOpens--
		n.fuseClosed = time.Now()
		return
	}
	h.local = nil
	if n.openLocal--; n.openLocal == 0 {
		if err := n.local.Close(); err != nil {
			n.log.WithError(err).WithField("file", n.m.entry.Name).Warn("close local copy of a layer file")
		}
		n.local = nil
	}
}

func (n *fileNode) verify(ctx context.Context) error {
	v, ok := n.r.(Verifier)
	if !ok {
		return nil
	}
	n.verifyMu.Lock()
	defer n.verifyMu.Unlock()
	if n.verified {
		return nil
	}
	if err := v.VerifyEntry(ctx, n.m.entry); err != nil {
		return err
	}
	n.verified = true
	return nil
}

// Read serves bytes of the file. Reads past the end return nothing; a short
// read from the Reader is an error (the TOC promised the bytes).
func (n *fileNode) Read(ctx context.Context, fh fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= n.m.size {
		return fuse.ReadResultData(nil), fusefs.OK
	}
	want := min(int64(len(dest)), n.m.size-off)
	if h, ok := fh.(*handle); ok && h.local != nil {
		return fuse.ReadResultFd(h.local.Fd(), off, int(want)), fusefs.OK
	}
	got, err := n.r.ReadAt(ctx, dest[:want], n.m.entry.UncompressedOffset+off)
	if int64(got) < want {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("short read: %d of %d bytes: %w", got, want, io.ErrUnexpectedEOF)
		}
		return nil, n.toErrno(ctx, "read", fmt.Errorf("read %d bytes at %d: %w", want, off, err))
	}
	return fuse.ReadResultData(dest[:want]), fusefs.OK
}

// handle is an open regular file. local, when set, holds the file's bytes
// on local disk (shared with the node's other passthrough handles), used for
// passthrough or, if the kernel refuses that, for reads spliced from the fd.
type handle struct {
	node  *fileNode
	local *os.File
}

var (
	_ = (fusefs.FilePassthroughFder)((*handle)(nil))
	_ = (fusefs.FileReleaser)((*handle)(nil))
)

// PassthroughFd offers the local file to the kernel. go-fuse asks only
// the first handle of an inode with no backing file registered and shares
// that registration with the inode's later handles; the kernel keeps its
// own reference to the backing file.
func (h *handle) PassthroughFd() (int, bool) {
	if h.local == nil {
		return -1, false
	}
	return int(h.local.Fd()), true
}

// Release uncounts the handle.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.node.closeHandle(h)
	return fusefs.OK
}

// toErrno maps an error from the Reader or Verifier to the errno the reading
// process sees, logging it (this is where the error is handled). An
// interrupted request gives EINTR; everything else is EIO.
func (n *fileNode) toErrno(ctx context.Context, op string, err error) syscall.Errno {
	if interrupted(ctx, err) {
		return syscall.EINTR
	}
	n.log.WithError(err).WithField("file", n.m.entry.Name).Errorf("layer file %s failed", op)
	return syscall.EIO
}

// interrupted reports whether err only says that the FUSE request was
// interrupted (a signal to the caller, Go's preemption signal among them):
// such a request answers EINTR, so that the call is retried, and says
// nothing about the layer.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}
