package ztoc

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"sort"
)

// ErrHeaderMismatch reports tar header bytes that do not describe the TOC
// entry they should: the layer blob and the zTOC disagree.
var ErrHeaderMismatch = errors.New("tar header does not match ztoc entry")

// HeaderOffsets returns, for each TOC entry (same index), the offset of its
// tar header region in the uncompressed tar: the zTOC does not store it, so
// it is derived as the reference does (as in the AWS soci-snapshotter). Entries sorted
// by data offset tile the tar: the first header starts at 0, each next one
// at the previous entry's data end rounded up to 512. The region
// [header, UncompressedOffset) holds the entry's header blocks, PAX and
// long-name blocks included. Entries whose data overlaps another entry's
// header give an error wrapping ErrInvalid.
func (z *Ztoc) HeaderOffsets() ([]int64, error) {
	order := make([]int, len(z.TOC))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return z.TOC[order[a]].UncompressedOffset < z.TOC[order[b]].UncompressedOffset
	})
	offsets := make([]int64, len(z.TOC))
	next := int64(0)
	for _, i := range order {
		e := &z.TOC[i]
		if e.UncompressedOffset < next+tarBlockSize || e.UncompressedSize < 0 {
			return nil, fmt.Errorf("toc entry %d (%q): data at %d overlaps the header at %d: %w",
				i, e.Name, e.UncompressedOffset, next, ErrInvalid)
		}
		offsets[i] = next
		next = alignBlock(e.UncompressedOffset + e.UncompressedSize)
	}
	return offsets, nil
}

// VerifyHeader parses headerBytes, the tar bytes [header offset,
// entry.UncompressedOffset) read from the layer, and checks that they are
// exactly one tar header (with its PAX or long-name blocks) describing
// entry: name, type, size, mode, owner, mtime, link target, device numbers
// and xattrs. A mismatch gives an error wrapping ErrHeaderMismatch. Layers
// served lazily are checked this way before a file's bytes are trusted, as
// the reference snapshotter does.
func VerifyHeader(entry *FileMetadata, headerBytes []byte) error {
	cr := &countingReader{r: bytes.NewReader(headerBytes)}
	h, err := tar.NewReader(cr).Next()
	if err != nil {
		return fmt.Errorf("verify header of %q: parse: %v: %w", entry.Name, err, ErrHeaderMismatch)
	}
	if cr.n != int64(len(headerBytes)) {
		return fmt.Errorf("verify header of %q: header uses %d of %d bytes: %w",
			entry.Name, cr.n, len(headerBytes), ErrHeaderMismatch)
	}
	if field := headerDiff(entry, h); field != "" {
		return fmt.Errorf("verify header of %q: %s differs: %w", entry.Name, field, ErrHeaderMismatch)
	}
	return nil
}

// headerDiff names the first field where h and m disagree, or returns "".
func headerDiff(m *FileMetadata, h *tar.Header) string {
	typ, _ := entryType(h.Typeflag)
	switch {
	case h.Name != m.Name:
		return "name"
	case typ != m.Type:
		return "type"
	case h.Size != m.UncompressedSize:
		return "size"
	case h.Mode != m.Mode:
		return "mode"
	case uint32(h.Uid) != m.UID || uint32(h.Gid) != m.GID:
		return "owner"
	case !h.ModTime.Equal(m.ModTime):
		return "mtime"
	case h.Linkname != m.Linkname:
		return "linkname"
	case h.Devmajor != m.Devmajor || h.Devminor != m.Devminor:
		return "device numbers"
	}
	want := m.Xattrs()
	got := (&FileMetadata{PAXRecords: h.PAXRecords}).Xattrs()
	if !maps.Equal(got, want) {
		return "xattrs"
	}
	return ""
}
