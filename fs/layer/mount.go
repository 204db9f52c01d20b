package layer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// DefaultCacheTimeout is how long the kernel may cache entries, attributes
// and negative lookups when MountOptions.CacheTimeout is zero. A layer never
// changes while mounted, so the only limit is memory, which the kernel
// manages by evicting cold dentries anyway.
const DefaultCacheTimeout = 24 * time.Hour

// DefaultMaxRead is the largest read request the kernel sends when
// MountOptions.MaxRead is zero: large requests mean fewer round trips to
// the span layer for sequential reads.
const DefaultMaxRead = 1 << 20

// MountOptions are the knobs of Mount. The zero value is valid.
type MountOptions struct {
	// CacheTimeout is the entry, attribute and negative-entry timeout;
	// zero means DefaultCacheTimeout.
	CacheTimeout time.Duration
	// MaxRead is the largest read request and the kernel's readahead
	// window for the mount; zero means DefaultMaxRead.
	MaxRead int
	// Debug logs every FUSE request (go-fuse's debug output, to stderr).
	Debug bool
	// NoSetuid mounts nosuid,nodev: setuid bits and device nodes of the
	// layer grant nothing. For mounts no container runs from (ociseek
	// mount), where a setuid-root file would otherwise give any user root.
	NoSetuid bool
	// OwnerOnly mounts without allow_other: only the mounting user can
	// reach the files.
	OwnerOnly bool
}

// Mount serves root at mountpoint, read-only, and returns once the kernel
// has the mount. The caller owns the returned Session: Unmount ends it. By
// default the mount allows other users (containers run as any uid) and has
// the kernel check permissions against the TOC's modes; setuid bits and
// device nodes are honoured, as they would be for the layer extracted on
// disk (opts.NoSetuid and opts.OwnerOnly turn both off).
//
// This process opens /dev/fuse and mounts it itself (mount(2) with fd=N),
// and go-fuse serves the fd through its "/dev/fd/N" form: so the Session can
// hand a second fd of the same connection (Device) to whatever keeps the
// mount alive across a restart of this process (see Adopt).
func Mount(mountpoint string, root *Root, opts MountOptions) (*Session, error) {
	fo, flags := fuseOptions(root, opts)
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return nil, fmt.Errorf("mount layer at %s: %w", mountpoint, &os.PathError{Op: "stat", Path: mountpoint, Err: err})
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount layer at %s: open /dev/fuse: %w", mountpoint, err)
	}
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount layer at %s: dup /dev/fuse fd: %w", mountpoint, err)
	}
	dev := os.NewFile(uintptr(keep), "/dev/fuse")
	data := mountData(fd, st.Mode&unix.S_IFMT, &fo.MountOptions)
	if err := unix.Mount(fo.MountOptions.FsName, mountpoint, "fuse."+fo.MountOptions.Name, flags, data); err != nil {
		unix.Close(fd)
		dev.Close()
		return nil, fmt.Errorf("mount layer at %s: mount(2) %s: %w", mountpoint, data, err)
	}
	// go-fuse owns fd from here on, and reads the kernel's INIT from it.
	hfs := newHandleFS(fusefs.NewNodeFS(root, fo), firstEpoch)
	server, err := fuse.NewServer(hfs, fmt.Sprintf("/dev/fd/%d", fd), &fo.MountOptions)
	if err != nil {
		_ = unix.Unmount(mountpoint, unix.MNT_DETACH)
		dev.Close()
		return nil, fmt.Errorf("mount layer at %s: %w", mountpoint, err)
	}
	s := &Session{server: server, mountpoint: mountpoint, dev: dev,
		handoff: Handoff{Init: initOf(server.KernelSettings()), Epoch: firstEpoch}}
	go server.Serve()
	if err := pollHack(mountpoint); err != nil {
		_ = s.Unmount()
		return nil, fmt.Errorf("mount layer at %s: %w", mountpoint, err)
	}
	setReadAheadOrWarn(mountpoint, fo.MountOptions.MaxWrite)
	return s, nil
}

// pollHack makes the kernel ask the new connection once whether it can
// poll, which go-fuse answers ENOSYS, so the kernel never asks again. Go's
// netpoller registers files it opens with epoll, which sends POLL to the
// server; a process serving its own mount could otherwise wedge, every
// thread waiting (go-fuse's WaitMount does this, but not for a
// "/dev/fd/N" mount). The name is one go-fuse answers itself. The kernel
// remembers the answer for the connection, so an adopted one needs none.
func pollHack(mountpoint string) error {
	fd, err := unix.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open poll probe: %w", err)
	}
	defer unix.Close(fd)
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

// fuseOptions returns the go-fuse options of a layer mount and the
// mount(2) flags. Mount and Adopt share them: an adopted connection must
// be served as it was negotiated.
func fuseOptions(root *Root, opts MountOptions) (*fusefs.Options, uintptr) {
	timeout := opts.CacheTimeout
	if timeout <= 0 {
		timeout = DefaultCacheTimeout
	}
	maxRead := opts.MaxRead
	if maxRead <= 0 {
		maxRead = DefaultMaxRead
	}
	flags, suidOptions := uintptr(syscall.MS_RDONLY), []string{"suid", "dev"}
	if opts.NoSetuid {
		flags, suidOptions = flags|syscall.MS_NOSUID|syscall.MS_NODEV, []string{"nosuid", "nodev"}
	}
	return &fusefs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// A mode of 0000 in the tar means 0000, not go-fuse's 0644 default.
		NullPermissions: true,
		// Node IDs are the model's inode numbers (root 1, then in walk
		// order), the same in every process that builds the tree from
		// the same TOC: a successor serves the IDs the kernel holds.
		ExternalNodeID: true,
		MountOptions: fuse.MountOptions{
			FsName:     "ociseek",
			Name:       "ociseek",
			AllowOther: !opts.OwnerOnly,
			Options:    append([]string{"ro", "default_permissions"}, suidOptions...),
			MaxWrite:   maxRead,
			// Kept below the kernel's limit (go-fuse clamps MaxWrite to
			// it too), so the mount's max_read is what go-fuse uses.
			MaxReadAhead:  maxRead,
			MaxBackground: 64,
			// Reads are answered from memory (the Reader), and local
			// files go through passthrough; go-fuse's splice path would
			// only grow a pipe per read and, for 1 MiB reads, fail (the
			// header does not fit a pipe of pipe-max-size) and log.
			DisableSplice: true,
			DisableXAttrs: !root.HasXattrs(),
			// Immutable content: no automatic page-cache invalidation on
			// attribute refresh, and symlink targets cached for good.
			ExplicitDataCacheControl: true,
			EnableSymlinkCaching:     true,
			Debug:                    opts.Debug,
		},
	}, flags
}

// mountData is the fuse mount(2) data string, as go-fuse's direct mount
// writes it: the kernel understands only these keys (fs/fuse/inode.c) and
// the generic "ro"; suid and dev travel as flags.
func mountData(fd int, rootMode uint32, mo *fuse.MountOptions) string {
	r := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", rootMode),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", mo.MaxWrite),
	}
	for _, o := range mo.Options {
		switch o {
		case "suid", "nosuid", "dev", "nodev":
		default:
			r = append(r, o)
		}
	}
	if mo.AllowOther {
		r = append(r, "allow_other")
	}
	return strings.Join(r, ",")
}

// setReadAheadOrWarn raises the mount's readahead window, logging when it
// cannot: the mount works without it, sequential reads just arrive in
// 128 KiB requests instead of MaxRead-sized ones.
func setReadAheadOrWarn(mountpoint string, bytes int) {
	if err := setReadAhead(mountpoint, bytes); err != nil {
		log.L.WithError(err).WithField("mountpoint", mountpoint).Warn("set layer mount readahead")
	}
}

// setReadAhead raises the kernel's readahead window for the mount. FUSE
// caps the window at the 128 KiB default whatever MaxReadAhead says, so
// cold sequential reads would reach the Reader as 128 KiB requests; the
// window lives in the mount's backing-device info in sysfs.
func setReadAhead(mountpoint string, bytes int) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("stat mountpoint: %w", err)
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(bdi, []byte(strconv.Itoa(bytes>>10)), 0); err != nil {
		return fmt.Errorf("write %s: %w", bdi, err)
	}
	return nil
}
