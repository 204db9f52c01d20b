package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Session is one FUSE connection serving a layer at a mountpoint: made by
// Mount, or taken over from an earlier process by Adopt.
type Session struct {
	server     *fuse.Server
	mountpoint string
	// dev is a second fd of the connection: the one a keeper holds while
	// no process serves it (go-fuse closes its own when serving ends).
	dev     *os.File
	handoff Handoff
}

// Handoff is what a process needs, beside the /dev/fuse fd, to go on
// serving a connection another process served: the kernel's INIT (it is
// sent only once per connection) and the epoch of the file handles the
// serving process gave out. It is stored as JSON by whoever keeps the fd;
// fields are only ever added, so an older daemon's hand-off reads in a
// newer one.
type Handoff struct {
	Init InitSettings `json:"init"`
	// Epoch is in the upper 32 bits of every file handle the server
	// gives the kernel (handles.go); a successor uses Epoch+1, so the
	// handles of its predecessors are recognised as theirs.
	Epoch uint32 `json:"epoch"`
}

// InitSettings is the kernel's FUSE_INIT request of a connection.
type InitSettings struct {
	Major        uint32 `json:"major"`
	Minor        uint32 `json:"minor"`
	MaxReadAhead uint32 `json:"max_readahead"`
	Flags        uint32 `json:"flags"`
	Flags2       uint32 `json:"flags2"`
}

// firstEpoch is the handle epoch of a freshly mounted connection.
const firstEpoch = 1

func initOf(in *fuse.InitIn) InitSettings {
	return InitSettings{Major: in.Major, Minor: in.Minor, MaxReadAhead: in.MaxReadAhead, Flags: in.Flags, Flags2: in.Flags2}
}

// Handoff returns what a successor needs to adopt the connection.
func (s *Session) Handoff() Handoff { return s.handoff }

// Device returns this process's second fd of the connection, to give to
// a keeper (its SCM_RIGHTS copy is independent of this one). The Session
// closes it when it ends.
func (s *Session) Device() *os.File { return s.dev }

// Mountpoint is where the connection is mounted.
func (s *Session) Mountpoint() string { return s.mountpoint }

// Unmount unmounts the layer and waits for the serving goroutines to end.
// On error (a busy mount) the mount is left as it was; the caller may
// detach it (MNT_DETACH) and call Wait.
func (s *Session) Unmount() error {
	var err error
	delay := time.Duration(0)
	for try := 0; try < 5; try++ {
		if err = unix.Unmount(s.mountpoint, 0); err == nil || errors.Is(err, unix.EINVAL) {
			// EINVAL: not mounted any more (detached behind our back).
			break
		}
		// The kernel may not have seen every close of the files yet.
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	s.Wait()
	return nil
}

// Wait waits until the connection ends (unmounted and every file closed,
// or aborted), then closes the keeper's fd.
func (s *Session) Wait() {
	s.server.Wait()
	if s.dev != nil {
		s.dev.Close()
	}
}

// Adopt serves root on a connection that an earlier process mounted and
// served (dev is an fd of it, h what that process handed over), without
// remounting: processes with files open in the mount keep them, and
// requests the earlier process had read but not answered are asked for
// again (FUSE_NOTIFY_RESEND). root must be built from the same TOC as the
// earlier tree, so that the node IDs the kernel holds name the same nodes;
// opts must be the earlier ones. Adopt takes dev over (Device returns it).
//
// go-fuse has no API to serve a connection whose INIT is done: NewServer
// insists on reading INIT first. So NewServer is given a socket pair
// instead of the device, with the recorded INIT waiting in it, and once
// it has answered, the device is dup3'd onto the same fd number before
// serving starts. go-fuse reads and writes that number with plain system
// calls (the fd is blocking, so Go's poller never registered it), so it
// serves the device from then on; nothing in go-fuse is changed.
func Adopt(mountpoint string, dev *os.File, h Handoff, root *Root, opts MountOptions) (*Session, error) {
	if h.Init.Major == 0 {
		return nil, fmt.Errorf("adopt layer mount at %s: the hand-off has no FUSE INIT", mountpoint)
	}
	fo, _ := fuseOptions(root, opts)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("adopt layer mount at %s: socketpair: %w", mountpoint, err)
	}
	defer unix.Close(pair[1])
	if _, err := unix.Write(pair[1], initRequest(h.Init)); err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("adopt layer mount at %s: queue INIT: %w", mountpoint, err)
	}
	next := h
	next.Epoch++
	hfs := newHandleFS(fusefs.NewNodeFS(root, fo), next.Epoch)
	server, err := fuse.NewServer(hfs, fmt.Sprintf("/dev/fd/%d", pair[0]), &fo.MountOptions)
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("adopt layer mount at %s: %w", mountpoint, err)
	}
	// Every node the kernel may name is known before the first request.
	root.registerAll(hfs)
	if err := unix.Dup3(int(dev.Fd()), pair[0], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("adopt layer mount at %s: dup3 /dev/fuse: %w", mountpoint, err)
	}
	s := &Session{server: server, mountpoint: mountpoint, dev: dev, handoff: next}
	go server.Serve()
	if err := Resend(dev); err != nil {
		root.opts.Logger.WithError(err).WithField("mountpoint", mountpoint).
			Warn("the kernel cannot resend requests in flight at the hand-off (FUSE_NOTIFY_RESEND needs Linux 6.9): reads in flight then wait until the connection is aborted")
	}
	return s, nil
}

// Resend asks the kernel to queue again every request of dev's connection
// that was read but not answered (the previous server died with them).
// Linux 6.9 and later; older kernels answer EINVAL.
func Resend(dev *os.File) error {
	// fuse_out_header: len, error, unique 0. With unique 0, error is the
	// notification's code (FUSE_NOTIFY_RESEND = 7); go-fuse keeps its
	// notify codes negated, as statuses are sent.
	var hdr [16]byte
	binary.NativeEndian.PutUint32(hdr[0:], uint32(len(hdr)))
	binary.NativeEndian.PutUint32(hdr[4:], uint32(-fuse.NOTIFY_RESEND))
	if _, err := unix.Write(int(dev.Fd()), hdr[:]); err != nil {
		return fmt.Errorf("FUSE_NOTIFY_RESEND: %w", err)
	}
	return nil
}

// initRequest encodes a FUSE_INIT request carrying in, as the kernel
// would have sent it.
func initRequest(in InitSettings) []byte {
	const opInit = 26 // FUSE_INIT
	req := fuse.InitIn{Major: in.Major, Minor: in.Minor, MaxReadAhead: in.MaxReadAhead, Flags: in.Flags, Flags2: in.Flags2}
	req.Length = uint32(unsafe.Sizeof(req))
	req.Opcode = opInit
	req.Unique = 1
	return unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req))
}
