// Package layer owns the read-only file tree of one image layer as served
// over FUSE: the inodes, their attributes and extended attributes, and the
// mapping from errors to FUSE errnos.
//
// The tree is built once, eagerly, from the layer's TOC (the zTOC's list of
// tar entries): New validates every name and builds an in-memory model, and
// the root's OnAdd turns that model into persistent go-fuse inodes. Lookups,
// getattr, readdir, readlink and xattr calls therefore never touch the
// network; only reading file bytes goes through the Reader, which the span
// layer (fs/span) implements over the uncompressed tar.
//
// The tree presents the layer as a lower layer of overlayfs expects it:
//   - a whiteout entry ".wh.NAME" is hidden and shown as a character device
//     0:0 named NAME (unless the layer itself holds a real NAME);
//   - a directory holding ".wh..wh..opq" answers getxattr
//     "trusted.overlay.opaque" with "y" (and "user.overlay.opaque" when the
//     overlay mount uses userxattr, see Options.UserXattr);
//   - other ".wh..wh.*" entries (aufs bookkeeping) are hidden.
//
// Tar semantics kept: a later entry with the same name replaces the earlier
// one (two directories merge, keeping the children); a hardlink names the
// inode its target had when the link entry was read, so nlink is exact;
// parents that the tar never lists are synthesised as 0755 root-owned
// directories with a zero (Unix epoch) mtime.
//
// Hazards: the TOC comes off the network. Names are taken relative to the
// layer root (leading "/" and "." components dropped, as tar does); names
// that contain "..", NUL bytes or over-long components, that pass through a
// non-directory (a symlink could otherwise point them anywhere), device
// numbers the kernel cannot carry, and hardlinks whose target is missing or
// a directory make New fail with an error wrapping ErrInvalidEntry rather
// than being served. A security.capability value that setxattr(2) would
// refuse is dropped, as extraction would drop it, and so are xattrs in
// overlayfs's private namespaces (trusted.overlay.*, user.overlay.*): overlay
// obeys them in a lower layer (redirects, metacopy, opacity), and a layer
// must not steer it other than with whiteout markers.
//
// A process that serves a mount must not fork and exec a file inside that
// mount itself: Go starts children with vfork, which suspends the forking
// thread (holding syscall.ForkLock and its P) until the child has exec'd,
// while the child's exec waits for FUSE answers from this process; the
// tests deadlocked this way at GOMAXPROCS=1 and under -race. Exec through
// an intermediate program (/bin/sh -c) instead. Containers and other
// processes are unaffected.
// A layer is immutable, so Mount asks the kernel to cache entries,
// attributes and negative lookups for the life of the mount.
package layer

import (
	"context"
	"errors"
	"os"
	"sync/atomic"

	"github.com/containerd/log"

	"github.com/ociseek/ociseek/ztoc"
)

// ErrInvalidEntry reports a TOC entry that cannot be served safely: a
// hostile or malformed name, or a hardlink that does not resolve.
var ErrInvalidEntry = errors.New("invalid layer entry")

// Reader reads the uncompressed tar stream of the layer. off is an offset in
// the tar, i.e. entry.UncompressedOffset plus the offset within the file.
//
// ReadAt must be safe for concurrent use. It follows io.ReaderAt's contract
// (n < len(p) only with a non-nil error), and it must honour ctx: the FUSE
// request's context is cancelled when the reading process is interrupted.
type Reader interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// Verifier is an optional extension of Reader. When the Reader implements
// it, VerifyEntry is called on the first open of each regular file, before
// any of its bytes are served; an error makes the open fail with EIO (and it
// is retried on the next open, so a transient fetch failure is not sticky).
// The span layer implements it by checking the file's tar header against the
// TOC entry.
type Verifier interface {
	VerifyEntry(ctx context.Context, entry *ztoc.FileMetadata) error
}

// LocalFiler is an optional extension of Reader for FUSE passthrough. When
// every byte of entry's file is on local disk, LocalFile returns an open file
// whose contents are exactly the file's bytes (offset 0 is the file's first
// byte) and true; the kernel then serves reads from it directly. The layer
// asks only when the file has no open handle (the kernel refuses to mix
// passthrough and other opens of one file), shares the returned file among
// the handles opened while it is in use, and closes it when the last of
// them is released.
type LocalFiler interface {
	LocalFile(ctx context.Context, entry *ztoc.FileMetadata) (*os.File, bool)
}

// OpenObserver is an optional extension of Reader, for metrics: Opened is
// called after each successful open of a regular file, with whether the
// handle was offered to the kernel for passthrough (the kernel then reads
// the local file without asking this process).
type OpenObserver interface {
	Opened(entry *ztoc.FileMetadata, passthrough bool)
}

// Options are the knobs of New. The zero value is valid.
type Options struct {
	// UserXattr makes opaque directories also answer "user.overlay.opaque",
	// for overlay mounts made with the userxattr option. It is off by
	// default so that a trusted-xattr overlay does not show the marker to
	// containers as an ordinary user xattr.
	UserXattr bool
	// TrustMetadata serves privileged metadata without verifying its tar
	// headers first (gate.go). It exists only as the baseline of the
	// benchmark that measures what the check costs; nothing else sets it.
	TrustMetadata bool
	// Logger receives read and verification failures, which the reading
	// process only sees as EIO. The caller attaches the layer's fields
	// (digest, mountpoint) once; nil means containerd's default logger.
	Logger *log.Entry
}

// Root is the root directory of a layer's tree; pass it to Mount.
type Root struct {
	dirNode
	tree   *tree
	reader Reader
	opts   Options
	// registering: see dirNode.registering.
	registering atomic.Bool
}

// New validates toc and builds the layer's tree. r serves file bytes; it is
// not called by New. The returned Root can be mounted once.
func New(toc []ztoc.FileMetadata, r Reader, opts Options) (*Root, error) {
	if r == nil {
		return nil, errors.New("new layer tree: nil Reader")
	}
	t, err := buildTree(toc)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = log.L
	}
	root := &Root{tree: t, reader: r, opts: opts}
	root.dirNode.m = t.root
	return root, nil
}

// HasXattrs reports whether any node of the layer answers getxattr with a
// value: an entry with xattrs, or an opaque directory. When false, Mount
// tells the kernel not to ask at all.
func (r *Root) HasXattrs() bool {
	return r.tree.hasXattrs
}

// Entries reports the number of names in the tree, excluding the root
// (hardlinks count once per name, synthesised whiteouts and parents count).
func (r *Root) Entries() int {
	return r.tree.names
}
