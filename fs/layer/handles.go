package layer

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// handleFS sits between go-fuse's protocol server and its node bridge and
// makes what the kernel holds survive a change of serving process:
//   - FORGET is dropped. Every node is persistent, so forgetting frees
//     nothing; and after a hand-off the kernel forgets lookups an earlier
//     process counted, which the bridge would take for an underflow.
//   - File handles carry the server's epoch in their upper 32 bits. A
//     handle of another epoch was given out by an earlier process: its
//     requests are served by the node alone (reads through the Reader,
//     as for a handle-less read; a directory listing through a handle
//     opened for the request), and its RELEASE has nothing to free.
type handleFS struct {
	fuse.RawFileSystem
	epoch uint64
}

func newHandleFS(inner fuse.RawFileSystem, epoch uint32) *handleFS {
	return &handleFS{RawFileSystem: inner, epoch: uint64(epoch)}
}

const handleMask = 1<<32 - 1

// local returns the bridge's handle for the kernel's fh, and false for a
// handle of an earlier process (0 then: no handle).
func (h *handleFS) local(fh uint64) (uint64, bool) {
	if fh == 0 {
		return 0, true
	}
	if fh>>32 != h.epoch {
		return 0, false
	}
	return fh & handleMask, true
}

// kernel returns the kernel's handle for a bridge handle.
func (h *handleFS) kernel(fh uint64) uint64 {
	if fh == 0 {
		return 0
	}
	return h.epoch<<32 | fh
}

func (h *handleFS) lfh(fh uint64) uint64 {
	l, _ := h.local(fh)
	return l
}

// Forget is dropped (see handleFS).
func (h *handleFS) Forget(nodeid, nlookup uint64) {}

// Open gives the kernel the handle with the epoch.
func (h *handleFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := h.RawFileSystem.Open(cancel, in, out)
	out.Fh = h.kernel(out.Fh)
	return st
}

// OpenDir gives the kernel the handle with the epoch.
func (h *handleFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := h.RawFileSystem.OpenDir(cancel, in, out)
	out.Fh = h.kernel(out.Fh)
	return st
}

// Create is refused by the read-only tree; the handle is translated all
// the same, so that a tree that allowed it would stay consistent.
func (h *handleFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := h.RawFileSystem.Create(cancel, in, name, out)
	out.Fh = h.kernel(out.Fh)
	return st
}

// Tmpfile: as Create.
func (h *handleFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	st := h.RawFileSystem.Tmpfile(cancel, in, out)
	out.Fh = h.kernel(out.Fh)
	return st
}

// Read of an earlier process's handle is served by the node.
func (h *handleFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Read(cancel, &c, buf)
}

// Release frees the bridge's handle; an earlier process's has nothing here.
func (h *handleFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if l, ok := h.local(in.Fh); ok {
		c := *in
		c.Fh = l
		h.RawFileSystem.Release(cancel, &c)
	}
}

// ReleaseDir: as Release.
func (h *handleFS) ReleaseDir(in *fuse.ReleaseIn) {
	if l, ok := h.local(in.Fh); ok {
		c := *in
		c.Fh = l
		h.RawFileSystem.ReleaseDir(&c)
	}
}

// ReadDir of an earlier process's handle lists through a handle opened
// for this request (listings are built once and seekable by offset).
func (h *handleFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return h.readDir(cancel, in, func(c *fuse.ReadIn) fuse.Status { return h.RawFileSystem.ReadDir(cancel, c, out) })
}

// ReadDirPlus: as ReadDir.
func (h *handleFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return h.readDir(cancel, in, func(c *fuse.ReadIn) fuse.Status { return h.RawFileSystem.ReadDirPlus(cancel, c, out) })
}

func (h *handleFS) readDir(cancel <-chan struct{}, in *fuse.ReadIn, read func(*fuse.ReadIn) fuse.Status) fuse.Status {
	c := *in
	if l, ok := h.local(in.Fh); ok {
		c.Fh = l
		return read(&c)
	}
	var open fuse.OpenOut
	if st := h.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader}, &open); !st.Ok() {
		return st
	}
	defer h.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: open.Fh})
	c.Fh = open.Fh
	return read(&c)
}

// GetAttr with an earlier process's handle is answered by the node.
func (h *handleFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c := *in
	c.Fh_ = h.lfh(in.Fh_)
	return h.RawFileSystem.GetAttr(cancel, &c, out)
}

// SetAttr: as GetAttr (the tree refuses it anyway).
func (h *handleFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.SetAttr(cancel, &c, out)
}

// Statx: as GetAttr.
func (h *handleFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Statx(cancel, &c, out)
}

// Lseek: as GetAttr.
func (h *handleFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Lseek(cancel, &c, out)
}

// GetLk: as GetAttr.
func (h *handleFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.GetLk(cancel, &c, out)
}

// SetLk: as GetAttr.
func (h *handleFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.SetLk(cancel, &c)
}

// SetLkw: as GetAttr.
func (h *handleFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.SetLkw(cancel, &c)
}

// Write: as GetAttr (refused by the read-only tree).
func (h *handleFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Write(cancel, &c, data)
}

// Writev: as Write.
func (h *handleFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Writev(cancel, &c, data)
}

// CopyFileRange: as GetAttr, for both handles.
func (h *handleFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	c := *in
	c.FhIn, c.FhOut = h.lfh(in.FhIn), h.lfh(in.FhOut)
	return h.RawFileSystem.CopyFileRange(cancel, &c)
}

// Ioctl: as GetAttr.
func (h *handleFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Ioctl(cancel, &c, inbuf, out, outbuf)
}

// Flush: as GetAttr.
func (h *handleFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Flush(cancel, &c)
}

// Fsync: as GetAttr.
func (h *handleFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Fsync(cancel, &c)
}

// FsyncDir: as GetAttr.
func (h *handleFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.FsyncDir(cancel, &c)
}

// Fallocate: as GetAttr.
func (h *handleFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	c := *in
	c.Fh = h.lfh(in.Fh)
	return h.RawFileSystem.Fallocate(cancel, &c)
}
