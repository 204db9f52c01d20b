package layer

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/containerd/log"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Opaque-directory markers overlayfs reads from a lower layer.
const (
	opaqueXattrTrusted = "trusted.overlay.opaque"
	opaqueXattrUser    = "user.overlay.opaque"
)

// blockSize is st_blksize; blocks are counted in 512-byte units of whole
// 4 KiB blocks, as a local filesystem would allocate them.
const blockSize = 4096

// attrNode serves what every kind of node has: attributes and xattrs. Each
// node kind embeds it; it embeds the go-fuse Inode.
type attrNode struct {
	fusefs.Inode
	m *meta
	// userXattr: opaque directories also answer user.overlay.opaque.
	userXattr bool
	// gate holds privileged metadata back until it is verified (gate.go).
	gate metaGate
	log  *log.Entry
}

var (
	_ = (fusefs.NodeGetattrer)((*attrNode)(nil))
	_ = (fusefs.NodeGetxattrer)((*attrNode)(nil))
	_ = (fusefs.NodeListxattrer)((*attrNode)(nil))
)

// Getattr reports the entry's attributes from the TOC.
func (n *attrNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.gate.open(ctx, n); errno != fusefs.OK {
		return errno
	}
	fillAttr(n.m, &out.Attr)
	return fusefs.OK
}

func fillAttr(m *meta, a *fuse.Attr) {
	a.Ino = m.ino
	a.Mode = m.mode
	a.Nlink = m.nlink
	a.Owner = fuse.Owner{Uid: m.uid, Gid: m.gid}
	a.Size = uint64(m.size)
	a.Rdev = m.rdev
	a.Blksize = blockSize
	if m.mode&syscall.S_IFMT == syscall.S_IFREG {
		a.Blocks = uint64((m.size+blockSize-1)/blockSize) * (blockSize / 512)
	}
	sec, nsec := uint64(m.mtime.Unix()), uint32(m.mtime.Nanosecond())
	a.Mtime, a.Mtimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
}

// xattr returns the value of an extended attribute, including the opaque
// marker synthesised for directories that held ".wh..wh..opq".
func (n *attrNode) xattr(name string) ([]byte, bool) {
	if n.m.opaque && (name == opaqueXattrTrusted || n.userXattr && name == opaqueXattrUser) {
		return []byte("y"), true
	}
	v, ok := n.m.xattrs[name]
	return v, ok
}

// Getxattr answers one extended attribute; ERANGE with the size when dest is
// too small, as getxattr(2) does.
func (n *attrNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if errno := n.gate.open(ctx, n); errno != fusefs.OK {
		return 0, errno
	}
	v, ok := n.xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), fusefs.OK
}

// Listxattr lists the names NUL-terminated, as listxattr(2) does.
func (n *attrNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if errno := n.gate.open(ctx, n); errno != fusefs.OK {
		return 0, errno
	}
	var list []byte
	if n.m.opaque {
		list = append(list, opaqueXattrTrusted+"\x00"...)
		if n.userXattr {
			list = append(list, opaqueXattrUser+"\x00"...)
		}
	}
	for _, name := range n.m.xattrNames {
		list = append(list, name...)
		list = append(list, 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), fusefs.OK
}

// dirNode is a directory. Its children are added once, in Root.OnAdd.
type dirNode struct {
	attrNode
	// entries is the listing, sorted by name, built with the children and
	// read-only afterwards (shared by every open handle).
	entries []fuse.DirEntry
	// registering is the Root's: set while an adopted tree makes its
	// nodes known to go-fuse (Root.registerAll), before serving.
	registering *atomic.Bool
}

var (
	_ = (fusefs.NodeStatfser)((*dirNode)(nil))
	_ = (fusefs.NodeOpendirHandler)((*dirNode)(nil))
)

// OpendirHandle serves the listing and lets the kernel cache it
// (FOPEN_CACHE_DIR): a directory of a layer never changes, so a second
// readdir needs no round trip.
func (n *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return fusefs.NewListDirStream(n.entries), fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, fusefs.OK
}

// Statfs reports a read-only filesystem with no free space.
func (n *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.NameLen = maxNameLen
	return fusefs.OK
}

// symlinkNode is a symbolic link.
type symlinkNode struct {
	attrNode
}

var _ = (fusefs.NodeReadlinker)((*symlinkNode)(nil))

// Readlink returns the target as stored in the tar.
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if errno := n.gate.open(ctx, &n.attrNode); errno != fusefs.OK {
		return nil, errno
	}
	return []byte(n.m.linkname), fusefs.OK
}

// specialNode is a character or block device, a fifo, or a whiteout (a
// character device 0:0). It has no content served by us: the kernel handles
// opening devices and fifos itself.
type specialNode struct {
	attrNode
}

var _ = (fusefs.InodeEmbedder)((*specialNode)(nil))
