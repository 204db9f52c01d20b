package layer

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/ztoc"
)

// Whiteout names of the OCI image spec (image-spec layer.md, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Limits of the Linux VFS; entries beyond them could not be extracted either.
const (
	maxNameLen      = 255     // NAME_MAX
	maxPathLen      = 4096    // PATH_MAX; also bounds the tree's depth
	maxLinkLen      = 4095    // PATH_MAX - 1
	maxXattrNameLen = 255     // XATTR_NAME_MAX
	maxXattrSize    = 1 << 16 // XATTR_SIZE_MAX
	maxDevMajor     = 0xfff   // FUSE carries rdev in the kernel's 32-bit encoding
	maxDevMinor     = 0xfffff // 12-bit major, 20-bit minor
)

// dirSize is the size reported for directories, as ext4 reports an empty one.
const dirSize = 4096

// meta is one inode of the model: everything the FUSE nodes serve. A regular
// file, symlink or device referenced by several names (hardlinks) is one meta.
type meta struct {
	ino        uint64
	mode       uint32 // S_IFMT type bits | permission, setuid, setgid, sticky
	uid, gid   uint32
	mtime      time.Time
	size       int64
	rdev       uint32
	nlink      uint32
	xattrNames []string // sorted; keys of xattrs
	xattrs     map[string][]byte
	linkname   string             // symlink target
	entry      *ztoc.FileMetadata // regular files: where the bytes are

	// checks are the entries whose tar headers vouch for what this node
	// shows that changes what a container may do (its type, mode, owner,
	// device number, link target, whiteout or opaque marker); they are
	// verified before the node is exposed (gate.go).
	checks []*ztoc.FileMetadata

	// Directories only.
	children  map[string]*meta
	whiteouts map[string]*ztoc.FileMetadata // ".wh.NAME" entries by NAME
	opaque    bool
}

func (m *meta) isDir() bool { return m.mode&syscall.S_IFMT == syscall.S_IFDIR }

// tree is the validated model of a layer.
type tree struct {
	root      *meta
	hasXattrs bool
	names     int
}

// buildTree validates toc and returns the layer's model. Entries are applied
// in order, as tar extraction applies them.
func buildTree(toc []ztoc.FileMetadata) (*tree, error) {
	t := &tree{root: newDir()}
	for i := range toc {
		if err := t.add(&toc[i]); err != nil {
			return nil, fmt.Errorf("layer entry %d %q: %w", i, toc[i].Name, err)
		}
	}
	t.finish()
	return t, nil
}

func newDir() *meta {
	return &meta{
		mode:     syscall.S_IFDIR | 0o755,
		mtime:    time.Unix(0, 0),
		size:     dirSize,
		children: make(map[string]*meta),
	}
}

// splitName turns a tar name into path components. Leading slashes, empty
// and "." components are dropped (as tar does); ".." is refused.
func splitName(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("name contains a NUL byte: %w", ErrInvalidEntry)
	}
	if len(name) > maxPathLen {
		return nil, fmt.Errorf("name of %d bytes is longer than %d: %w", len(name), maxPathLen, ErrInvalidEntry)
	}
	var parts []string
	for p := range strings.SplitSeq(name, "/") {
		switch {
		case p == "" || p == ".":
			continue
		case p == "..":
			return nil, fmt.Errorf("name contains \"..\": %w", ErrInvalidEntry)
		case len(p) > maxNameLen:
			return nil, fmt.Errorf("name component longer than %d bytes: %w", maxNameLen, ErrInvalidEntry)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// add applies one TOC entry to the model.
func (t *tree) add(e *ztoc.FileMetadata) error {
	parts, err := splitName(e.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if e.Type != ztoc.TypeDir {
			return fmt.Errorf("layer root as type %q: %w", e.Type, ErrInvalidEntry)
		}
		return setAttrs(t.root, e)
	}
	dir, err := t.parentDir(parts[:len(parts)-1])
	if err != nil {
		return err
	}
	base := parts[len(parts)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return addWhiteout(dir, base, e)
	}
	m, err := t.nodeFor(dir.children[base], e)
	if err != nil {
		return err
	}
	dir.children[base] = m
	return nil
}

// parentDir walks (and creates, as implicit directories) the parents of an
// entry. A parent that exists as a non-directory is refused: serving the
// entry would mean following a symlink or replacing a file, both of which
// let a layer reach outside the place its name says.
func (t *tree) parentDir(parts []string) (*meta, error) {
	dir := t.root
	for i, p := range parts {
		if strings.HasPrefix(p, whiteoutPrefix) {
			return nil, fmt.Errorf("whiteout %q used as a directory: %w", p, ErrInvalidEntry)
		}
		next, ok := dir.children[p]
		if !ok {
			next = newDir()
			dir.children[p] = next
		} else if !next.isDir() {
			return nil, fmt.Errorf("parent %q is not a directory: %w",
				strings.Join(parts[:i+1], "/"), ErrInvalidEntry)
		}
		dir = next
	}
	return dir, nil
}

func addWhiteout(dir *meta, base string, e *ztoc.FileMetadata) error {
	switch {
	case base == whiteoutOpaque:
		dir.opaque = true
		dir.checks = append(dir.checks, e)
	case strings.HasPrefix(base, whiteoutMeta):
		// Other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): hidden.
	default:
		name := base[len(whiteoutPrefix):]
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("whiteout of %q: %w", name, ErrInvalidEntry)
		}
		if dir.whiteouts == nil {
			dir.whiteouts = make(map[string]*ztoc.FileMetadata)
		}
		dir.whiteouts[name] = e
	}
	return nil
}

// nodeFor returns the meta a name takes after entry e, given the meta it had
// before (nil if none): a directory over a directory keeps its children,
// anything else replaces what was there.
func (t *tree) nodeFor(prev *meta, e *ztoc.FileMetadata) (*meta, error) {
	var m *meta
	switch e.Type {
	case ztoc.TypeDir:
		if prev != nil && prev.isDir() {
			m = prev
		} else {
			m = newDir()
		}
	case ztoc.TypeHardlink:
		m, err := t.hardlinkTarget(e.Linkname)
		if err != nil {
			return nil, err
		}
		// The link's own header says which file it names: opening it
		// checks only the target's header.
		m.checks = append(m.checks, e)
		return m, nil
	case ztoc.TypeReg:
		if e.UncompressedSize < 0 || e.UncompressedOffset < 0 ||
			e.UncompressedOffset > (1<<63-1)-e.UncompressedSize {
			return nil, fmt.Errorf("file range %d+%d: %w", e.UncompressedOffset, e.UncompressedSize, ErrInvalidEntry)
		}
		m = &meta{mode: syscall.S_IFREG, size: e.UncompressedSize, entry: e}
	case ztoc.TypeSymlink:
		if e.Linkname == "" || len(e.Linkname) > maxLinkLen || strings.IndexByte(e.Linkname, 0) >= 0 {
			return nil, fmt.Errorf("symlink target of %d bytes is empty, too long or holds NUL: %w",
				len(e.Linkname), ErrInvalidEntry)
		}
		m = &meta{mode: syscall.S_IFLNK, size: int64(len(e.Linkname)), linkname: e.Linkname}
	case ztoc.TypeChar, ztoc.TypeBlock:
		dev, err := devNumber(e)
		if err != nil {
			return nil, err
		}
		m = &meta{mode: syscall.S_IFCHR, rdev: dev}
		if e.Type == ztoc.TypeBlock {
			m.mode = syscall.S_IFBLK
		}
	case ztoc.TypeFifo:
		m = &meta{mode: syscall.S_IFIFO}
	default:
		return nil, fmt.Errorf("unsupported entry type %q: %w", e.Type, ErrInvalidEntry)
	}
	return m, setAttrs(m, e)
}

func devNumber(e *ztoc.FileMetadata) (uint32, error) {
	if e.Devmajor < 0 || e.Devmajor > maxDevMajor || e.Devminor < 0 || e.Devminor > maxDevMinor {
		return 0, fmt.Errorf("device number %d:%d out of range: %w", e.Devmajor, e.Devminor, ErrInvalidEntry)
	}
	// The low 32 bits of the glibc encoding are the kernel's new_encode_dev
	// for numbers in range, which is what FUSE carries.
	return uint32(unix.Mkdev(uint32(e.Devmajor), uint32(e.Devminor))), nil
}

// hardlinkTarget resolves a hardlink's target as the tree stands now, as tar
// extraction calls link(2) when it reaches the entry.
func (t *tree) hardlinkTarget(linkname string) (*meta, error) {
	parts, err := splitName(linkname)
	if err != nil {
		return nil, fmt.Errorf("hardlink target: %w", err)
	}
	m := t.root
	for _, p := range parts {
		if !m.isDir() {
			m = nil
			break
		}
		m = m.children[p]
		if m == nil {
			break
		}
	}
	switch {
	case m == nil:
		return nil, fmt.Errorf("hardlink target %q does not exist: %w", linkname, ErrInvalidEntry)
	case m.isDir():
		return nil, fmt.Errorf("hardlink target %q is a directory: %w", linkname, ErrInvalidEntry)
	}
	return m, nil
}

// setAttrs copies an entry's owner, permissions, time and xattrs onto m.
func setAttrs(m *meta, e *ztoc.FileMetadata) error {
	m.mode = m.mode&syscall.S_IFMT | uint32(e.Mode)&0o7777
	if privileged(m, e) {
		m.checks = append(m.checks, e)
	}
	m.uid, m.gid = e.UID, e.GID
	m.mtime = e.ModTime
	if m.mtime.IsZero() {
		m.mtime = time.Unix(0, 0)
	}
	m.xattrs, m.xattrNames = nil, nil
	for name, v := range e.Xattrs() {
		if len(name) > maxXattrNameLen || len(v) > maxXattrSize || strings.IndexByte(name, 0) >= 0 {
			return fmt.Errorf("xattr %.40q: name or value too long, or NUL in name: %w", name, ErrInvalidEntry)
		}
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			// overlayfs's private metadata: overlay would obey it from a
			// lower layer (redirects, metacopy, opacity), so a layer must
			// not be able to plant it; opacity is stated with a
			// .wh..wh..opq marker instead.
			continue
		}
		if name == capabilityXattr && !validFileCaps(v) {
			// setxattr(2) refuses such a value, so the layer extracted on
			// disk has none; serving it would make exec(2) of the file
			// fail with EINVAL.
			continue
		}
		if m.xattrs == nil {
			m.xattrs = make(map[string][]byte)
		}
		m.xattrs[name] = []byte(v)
		m.xattrNames = append(m.xattrNames, name)
	}
	slices.Sort(m.xattrNames)
	return nil
}

// capabilityXattr holds file capabilities (include/uapi/linux/capability.h).
const capabilityXattr = "security.capability"

// validFileCaps reports whether v is a file-capability value the kernel
// accepts from setxattr(2): a revision-2 header of 20 bytes or a revision-3
// header of 24 bytes (the little-endian magic_etc's top byte is the revision).
func validFileCaps(v string) bool {
	if len(v) < 4 {
		return false
	}
	switch rev := v[3]; {
	case rev == 2 && len(v) == 20, rev == 3 && len(v) == 24:
		return true
	}
	return false
}

// finish turns recorded whiteouts into character devices, then numbers the
// inodes and counts links.
func (t *tree) finish() {
	var ino uint64
	t.walk(t.root, func(m *meta, dir *meta) {
		if m.ino == 0 {
			ino++
			m.ino = ino
		}
		if dir == nil {
			return
		}
		t.names++
		if m.isDir() {
			dir.nlink++
		} else {
			m.nlink++
		}
		if len(m.xattrs) > 0 || m.opaque {
			t.hasXattrs = true
		}
	})
}

// walk visits every (node, parent) pair once, parents before children,
// after adding the whiteout devices of each directory. Directories start
// with nlink 2 ("." and the parent's entry).
func (t *tree) walk(m *meta, fn func(m, dir *meta)) {
	fn(m, nil)
	var visit func(dir *meta)
	visit = func(dir *meta) {
		dir.nlink = 2
		addWhiteoutNodes(dir)
		for _, name := range sortedNames(dir) {
			c := dir.children[name]
			fn(c, dir)
			if c.isDir() {
				visit(c)
			}
		}
		if len(dir.xattrs) > 0 || dir.opaque {
			t.hasXattrs = true
		}
	}
	visit(m)
}

func addWhiteoutNodes(dir *meta) {
	for name, e := range dir.whiteouts {
		if _, real := dir.children[name]; real {
			continue
		}
		m := &meta{mode: syscall.S_IFCHR, uid: e.UID, gid: e.GID, mtime: e.ModTime, checks: []*ztoc.FileMetadata{e}}
		if m.mtime.IsZero() {
			m.mtime = time.Unix(0, 0)
		}
		dir.children[name] = m
	}
	dir.whiteouts = nil
}

func sortedNames(dir *meta) []string {
	names := make([]string, 0, len(dir.children))
	for n := range dir.children {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// privileged reports whether entry e, applied to m, shows something that
// changes what a container may do, so that its header must be verified
// before the node is exposed: every kind but a plain regular file (a
// directory's mode and owner, a symlink's target, a device number), and a
// regular file with setuid or setgid bits or file capabilities.
func privileged(m *meta, e *ztoc.FileMetadata) bool {
	if m.mode&syscall.S_IFMT != syscall.S_IFREG {
		return true
	}
	if e.Mode&0o6000 != 0 {
		return true
	}
	_, caps := e.Xattrs()[capabilityXattr]
	return caps
}
