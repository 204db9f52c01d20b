package layer

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var _ = (fusefs.NodeOnAdder)((*Root)(nil))

// OnAdd builds the whole inode tree from the validated model when go-fuse
// mounts the root. Every inode is persistent, so lookups never create
// inodes and never race with each other; hardlinked names share one Inode.
func (r *Root) OnAdd(ctx context.Context) {
	r.dirNode.userXattr = r.opts.UserXattr
	if !r.opts.TrustMetadata {
		r.dirNode.gate.v, _ = r.reader.(Verifier)
	}
	r.dirNode.log = r.opts.Logger
	r.dirNode.registering = &r.registering
	made := make(map[*meta]*fusefs.Inode)
	r.addChildren(ctx, &r.dirNode, r.tree.root, made)
}

func (r *Root) addChildren(ctx context.Context, dn *dirNode, dir *meta, made map[*meta]*fusefs.Inode) {
	parent := dn.EmbeddedInode()
	names := sortedNames(dir)
	dn.entries = make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		m := dir.children[name]
		dn.entries = append(dn.entries, fuse.DirEntry{Name: name, Mode: m.mode & syscall.S_IFMT, Ino: m.ino})
		child, ok := made[m]
		if !ok {
			child = parent.NewPersistentInode(ctx, r.nodeOps(m), fusefs.StableAttr{
				Mode: m.mode & syscall.S_IFMT,
				Ino:  m.ino,
			})
			made[m] = child
		}
		parent.AddChild(name, child, false)
		if sub, ok := child.Operations().(*dirNode); ok {
			r.addChildren(ctx, sub, m, made)
		}
	}
}

// nodeOps returns the node type serving m's kind.
func (r *Root) nodeOps(m *meta) fusefs.InodeEmbedder {
	switch m.mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return &dirNode{attrNode: r.attrNode(m), registering: &r.registering}
	case syscall.S_IFREG:
		return &fileNode{attrNode: r.attrNode(m), r: r.reader}
	case syscall.S_IFLNK:
		return &symlinkNode{attrNode: r.attrNode(m)}
	default:
		return &specialNode{attrNode: r.attrNode(m)}
	}
}

// attrNode returns the attribute part of m's node, its gate verifying
// through the Reader when it can.
func (r *Root) attrNode(m *meta) attrNode {
	v, _ := r.reader.(Verifier)
	if r.opts.TrustMetadata {
		v = nil
	}
	return attrNode{m: m, userXattr: r.opts.UserXattr, gate: metaGate{v: v}, log: r.opts.Logger}
}

// registerAll looks every name of the tree up through fs, parents first,
// so that go-fuse knows every node ID before an adopted connection's first
// request: the kernel may name any node it learnt from the earlier process
// (go-fuse answers an unknown ID with EIO). It skips the metadata gate: the
// answers go nowhere, and the gate still guards what the kernel is told
// afterwards (a node it already knows was verified by the earlier process).
func (r *Root) registerAll(fs fuse.RawFileSystem) {
	r.registering.Store(true)
	defer r.registering.Store(false)
	var visit func(dir *meta)
	visit = func(dir *meta) {
		hdr := fuse.InHeader{NodeId: dir.ino}
		for _, name := range sortedNames(dir) {
			var out fuse.EntryOut
			fs.Lookup(nil, &hdr, name, &out)
			if m := dir.children[name]; m.isDir() {
				visit(m)
			}
		}
	}
	visit(r.tree.root)
}
