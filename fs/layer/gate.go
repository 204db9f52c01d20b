package layer

import (
	"context"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// metaGate holds back a node's privileged metadata until the tar headers
// of the entries behind it (meta.checks) have been verified: a forged TOC
// must not be able to show a whiteout, an opaque directory, a device, a
// setuid file, a symlink, a hardlink to another file, or a directory's
// mode and owner that the layer does not have. A check that fails (a
// mismatch fails the whole layer; a fetch error is retried at the next
// access) makes the access fail with EIO.
type metaGate struct {
	v  Verifier // nil: the Reader cannot verify, nothing to wait for
	mu sync.Mutex
	ok bool
}

// open verifies m's checks once; the caller gets EIO while they fail.
func (g *metaGate) open(ctx context.Context, n *attrNode) syscall.Errno {
	if g.v == nil || len(n.m.checks) == 0 {
		return fusefs.OK
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ok {
		return fusefs.OK
	}
	for _, e := range n.m.checks {
		if err := g.v.VerifyEntry(ctx, e); err != nil {
			if interrupted(ctx, err) {
				return syscall.EINTR
			}
			if n.log != nil {
				n.log.WithError(err).WithField("entry", e.Name).Warn("metadata not served: its tar header could not be verified")
			}
			return syscall.EIO
		}
	}
	g.ok = true
	return fusefs.OK
}

var _ = (fusefs.NodeLookuper)((*dirNode)(nil))

// Lookup finds a child among the persistent inodes and verifies its
// metadata before the kernel sees it. (go-fuse's default lookup ignores
// a Getattr error and would hand out zeroed attributes instead.)
func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	child := n.GetChild(name)
	if child == nil {
		return nil, syscall.ENOENT
	}
	if g, ok := child.Operations().(gated); ok && !n.registering.Load() {
		an := g.attrs()
		if errno := an.gate.open(ctx, an); errno != fusefs.OK {
			return nil, errno
		}
		fillAttr(an.m, &out.Attr)
	}
	return child, fusefs.OK
}

// gated is implemented by every node kind (through attrNode).
type gated interface{ attrs() *attrNode }

func (n *attrNode) attrs() *attrNode { return n }
