package layer

import (
	"fmt"
	"os"
	"strconv"
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
// has the mount. The caller owns the returned server: server.Unmount ends
// it. By default the mount allows other users (containers run as any uid)
// and has the kernel check permissions against the TOC's modes; setuid bits
// and device nodes are honoured, as they would be for the layer extracted
// on disk (opts.NoSetuid and opts.OwnerOnly turn both off).
func Mount(mountpoint string, root *Root, opts MountOptions) (*fuse.Server, error) {
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
	fo := &fusefs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// A mode of 0000 in the tar means 0000, not go-fuse's 0644 default.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:     "ociseek",
			Name:       "ociseek",
			AllowOther: !opts.OwnerOnly,
			// "ro" for fusermount; the direct mount gets MS_RDONLY below.
			Options:          append([]string{"ro", "default_permissions"}, suidOptions...),
			DirectMount:      true,
			DirectMountFlags: flags,
			MaxWrite:         maxRead,
			MaxReadAhead:     maxRead,
			MaxBackground:    64,
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
	}
	server, err := fuse.NewServer(fusefs.NewNodeFS(root, fo), mountpoint, &fo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount layer at %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		// Unmount also ends the Serve loop started above.
		_ = server.Unmount()
		return nil, fmt.Errorf("wait for layer mount at %s: %w", mountpoint, err)
	}
	if err := setReadAhead(mountpoint, maxRead); err != nil {
		// The mount works without it; sequential reads just arrive in
		// 128 KiB requests instead of MaxRead-sized ones.
		log.L.WithError(err).WithField("mountpoint", mountpoint).Warn("set layer mount readahead")
	}
	return server, nil
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
