package harness

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Mount is one line of the mount table, reduced to what tests check.
type Mount struct {
	// Point is the mountpoint.
	Point string
	// FSType is the file system type, e.g. "overlay" or "fuse.ociseek".
	FSType string
	// Source is the mount source (for FUSE, the server's FsName).
	Source string
}

// MountsUnder returns the mounts at or below dir, read from the mount table.
func MountsUnder(dir string) ([]Mount, error) {
	dir = filepath.Clean(abs(dir))
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := make([]Mount, 0, len(infos))
	for _, m := range infos {
		out = append(out, Mount{Point: m.Mountpoint, FSType: m.FSType, Source: m.Source})
	}
	return out, nil
}

// IsFUSE reports whether the mount is served by a FUSE daemon.
func (m Mount) IsFUSE() bool {
	return m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.")
}

// UnmountAll unmounts everything at or below dir, deepest first, so that
// no test leaves mounts behind even when it fails half-way. A mount that is
// busy is detached (MNT_DETACH) rather than left in place.
func UnmountAll(dir string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	// Deepest first: a mount below another must go before its parent.
	sort.Slice(mounts, func(i, j int) bool {
		return strings.Count(mounts[i].Point, "/") > strings.Count(mounts[j].Point, "/")
	})
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m.Point, 0); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			continue
		}
		if err := unix.Unmount(m.Point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.Point, err))
		}
	}
	return errors.Join(errs...)
}
