package ztoc

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"
)

// maxArchiveSize bounds the archive sizes a zTOC may declare (1 EiB), so
// offset arithmetic on them cannot overflow.
const maxArchiveSize = 1 << 60

// layoutBlockSize is the tar block size: headers take whole blocks and data
// starts on a block boundary.
const layoutBlockSize = 512

// Validate checks that z is internally consistent, so that the span
// geometry and the file tree derived from it are safe to use: span counts
// agree, checkpoints increase and lie inside the archive, digests parse, and
// every TOC entry has a safe name and a data range inside the archive that
// overlaps no other entry or header. Every error wraps ErrInvalid.
func (z *Ztoc) Validate() error {
	if err := z.validateSpans(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := z.validateTOC(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// validateSpans checks the compression info against the archive sizes.
func (z *Ztoc) validateSpans() error {
	if z.CompressedArchiveSize < 0 || z.UncompressedArchiveSize < 0 {
		return fmt.Errorf("negative archive size (compressed %d, uncompressed %d)",
			z.CompressedArchiveSize, z.UncompressedArchiveSize)
	}
	if z.CompressedArchiveSize > maxArchiveSize || z.UncompressedArchiveSize > maxArchiveSize {
		return fmt.Errorf("archive size (compressed %d, uncompressed %d) beyond %d",
			z.CompressedArchiveSize, z.UncompressedArchiveSize, int64(maxArchiveSize))
	}
	if z.MaxSpanID < 0 {
		return fmt.Errorf("max span id %d is negative", z.MaxSpanID)
	}
	spans := int64(z.MaxSpanID) + 1
	if int64(len(z.SpanDigests)) != spans {
		return fmt.Errorf("%d span digests for max span id %d", len(z.SpanDigests), z.MaxSpanID)
	}
	for i, d := range z.SpanDigests {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("span digest %d: %w", i, err)
		}
		if !strings.HasPrefix(string(d), spanDigestPrefix) {
			return fmt.Errorf("span digest %d %q is not sha256", i, d)
		}
	}
	switch z.CompressionAlgorithm {
	case CompressionGzip:
		if z.Gzip == nil || z.Tar != nil {
			return fmt.Errorf("gzip ztoc needs gzip checkpoints only")
		}
		return z.validateGzip()
	case CompressionUncompressed:
		if z.Tar == nil || z.Gzip != nil {
			return fmt.Errorf("uncompressed ztoc needs tar zinfo only")
		}
		return z.validateTar()
	default:
		return fmt.Errorf("unknown compression algorithm %q", z.CompressionAlgorithm)
	}
}

// validateGzip checks the checkpoints: one per span, the first at output
// offset 0, both offsets strictly increasing and inside the archive.
func (z *Ztoc) validateGzip() error {
	g := z.Gzip
	if g.SpanSize < 0 {
		return fmt.Errorf("negative span size %d", g.SpanSize)
	}
	if int64(len(g.Checkpoints)) != int64(z.MaxSpanID)+1 {
		return fmt.Errorf("%d checkpoints for max span id %d", len(g.Checkpoints), z.MaxSpanID)
	}
	for i, c := range g.Checkpoints {
		switch {
		case c.Bits > 7:
			return fmt.Errorf("checkpoint %d: %d bits", i, c.Bits)
		case len(c.Window) != WindowSize:
			return fmt.Errorf("checkpoint %d: window of %d bytes, want %d", i, len(c.Window), WindowSize)
		case c.In <= 0 || c.In > z.CompressedArchiveSize:
			return fmt.Errorf("checkpoint %d: compressed offset %d outside (0, %d]", i, c.In, z.CompressedArchiveSize)
		case c.Out < 0 || c.Out > z.UncompressedArchiveSize:
			// Out may equal the archive size: the reference places a
			// checkpoint at a member boundary even when only padding
			// beyond the end-of-archive blocks follows (multi-member fixture).
			return fmt.Errorf("checkpoint %d: uncompressed offset %d outside [0, %d]", i, c.Out, z.UncompressedArchiveSize)
		case i == 0 && c.Out != 0:
			return fmt.Errorf("checkpoint 0: uncompressed offset %d, want 0", c.Out)
		case i > 0 && (c.In <= g.Checkpoints[i-1].In || c.Out <= g.Checkpoints[i-1].Out):
			return fmt.Errorf("checkpoint %d: offsets (%d, %d) do not increase from (%d, %d)",
				i, c.In, c.Out, g.Checkpoints[i-1].In, g.Checkpoints[i-1].Out)
		}
	}
	return nil
}

// validateTar checks the fixed-size span geometry of an uncompressed layer:
// the blob is the archive, so its size bounds the tar's and fixes the span
// count.
func (z *Ztoc) validateTar() error {
	t := z.Tar
	switch {
	case t.SpanSize <= 0:
		return fmt.Errorf("tar zinfo span size %d", t.SpanSize)
	case t.Size != z.CompressedArchiveSize:
		return fmt.Errorf("tar zinfo size %d differs from archive size %d", t.Size, z.CompressedArchiveSize)
	case z.UncompressedArchiveSize > z.CompressedArchiveSize:
		return fmt.Errorf("tar of %d bytes in a blob of %d", z.UncompressedArchiveSize, z.CompressedArchiveSize)
	case t.Size == 0:
		return fmt.Errorf("tar zinfo size is 0")
	}
	want := (t.Size - 1) / t.SpanSize // the last span ends at t.Size
	if int64(z.MaxSpanID) != want {
		return fmt.Errorf("max span id %d, want %d for size %d and span size %d", z.MaxSpanID, want, t.Size, t.SpanSize)
	}
	return nil
}

// validateTOC checks every entry, then the entries' layout in the archive.
func (z *Ztoc) validateTOC() error {
	// Hardlink targets must name an earlier, non-directory entry. Only the
	// names some hardlink targets are tracked, so a TOC of 100k entries
	// with a few hardlinks costs a few map entries, not 100k.
	var targets map[string]int // cleaned target name → latest index, -1 before it appears
	for i := range z.TOC {
		if m := &z.TOC[i]; m.Type == TypeHardlink {
			if targets == nil {
				targets = make(map[string]int)
			}
			targets[cleanName(m.Linkname)] = -1
		}
	}
	for i := range z.TOC {
		m := &z.TOC[i]
		if err := z.validateEntry(m); err != nil {
			return fmt.Errorf("toc entry %d (%q): %w", i, m.Name, err)
		}
		if targets == nil {
			continue
		}
		if m.Type == TypeHardlink {
			j := targets[cleanName(m.Linkname)]
			if j < 0 {
				return fmt.Errorf("toc entry %d (%q): hardlink target %q is not an earlier entry", i, m.Name, m.Linkname)
			}
			if z.TOC[j].Type == TypeDir {
				return fmt.Errorf("toc entry %d (%q): hardlink to directory %q", i, m.Name, m.Linkname)
			}
		}
		if name := cleanName(m.Name); hasKey(targets, name) {
			targets[name] = i
		}
	}
	return z.validateLayout()
}

func hasKey(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// validateEntry checks one entry on its own.
func (z *Ztoc) validateEntry(m *FileMetadata) error {
	if err := checkName(m.Name); err != nil {
		return err
	}
	switch m.Type {
	case TypeReg, TypeDir, TypeChar, TypeBlock, TypeFifo:
	case TypeSymlink:
		if m.Linkname == "" || strings.IndexByte(m.Linkname, 0) >= 0 {
			return fmt.Errorf("symlink target %q is empty or holds NUL", m.Linkname)
		}
	case TypeHardlink:
		if err := checkName(m.Linkname); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
	default:
		return fmt.Errorf("unknown type %q", m.Type)
	}
	if m.UncompressedOffset < 0 || m.UncompressedSize < 0 {
		return fmt.Errorf("negative offset %d or size %d", m.UncompressedOffset, m.UncompressedSize)
	}
	if m.UncompressedSize > z.UncompressedArchiveSize-m.UncompressedOffset {
		return fmt.Errorf("data [%d, +%d) runs past the archive's %d bytes",
			m.UncompressedOffset, m.UncompressedSize, z.UncompressedArchiveSize)
	}
	if m.Devmajor < 0 || m.Devminor < 0 {
		return fmt.Errorf("negative device number %d:%d", m.Devmajor, m.Devminor)
	}
	if y := m.ModTime.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("modification year %d cannot be written", y)
	}
	return nil
}

// checkName refuses names that are empty, absolute, hold NUL or have a ".."
// element: such a name could address something outside the layer's tree.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute name %q", name)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %q holds NUL", name)
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return fmt.Errorf("name %q has a \"..\" element", name)
		}
	}
	return nil
}

// cleanName is the form names and hardlink targets are compared in: as
// the file tree sees them ("./a/b/" and "a/b" are the same node).
func cleanName(name string) string {
	if trimmed := strings.TrimSuffix(name, "/"); isClean(trimmed) {
		return trimmed // the common case, without allocating
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// isClean reports whether name is already in cleaned relative form: no
// empty, "." or ".." elements and no leading or trailing slash.
func isClean(name string) bool {
	if name == "" {
		return false
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
	}
	return true
}

// validateLayout checks, in offset order, that each entry's data starts
// after a header block that follows the previous entry's data, as readers
// derive header positions that way (as in the AWS soci-snapshotter): first header at
// 0, each next one at align512(prev.offset + prev.size).
func (z *Ztoc) validateLayout() error {
	order := make([]int32, len(z.TOC))
	sorted := true
	for i := range order {
		order[i] = int32(i)
		if i > 0 && z.TOC[i].UncompressedOffset < z.TOC[i-1].UncompressedOffset {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(order, func(a, b int32) int {
			return cmp.Compare(z.TOC[a].UncompressedOffset, z.TOC[b].UncompressedOffset)
		})
	}
	var header int64
	for _, i := range order {
		m := &z.TOC[i]
		if m.UncompressedOffset-header < layoutBlockSize {
			return fmt.Errorf("toc entry %d (%q): data at %d overlaps the header at %d or the entry before it",
				i, m.Name, m.UncompressedOffset, header)
		}
		header = layoutAlign(m.UncompressedOffset + m.UncompressedSize)
	}
	return nil
}

func layoutAlign(n int64) int64 { return (n + layoutBlockSize - 1) &^ (layoutBlockSize - 1) }
