package ztoc

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
)

// countingReader counts the bytes read through it. archive/tar reads its
// source exactly (it does not buffer ahead), so the count after Next is the
// offset of the entry's data and the count at end of archive is the size
// the zTOC records.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Seek lets archive/tar skip file data without copying it, when the source
// can skip forward (chunkReader can). Only forward moves from the current
// position are supported; archive/tar falls back to reading otherwise.
func (c *countingReader) Seek(offset int64, whence int) (int64, error) {
	s, ok := c.r.(io.Seeker)
	if !ok || whence != io.SeekCurrent || offset < 0 {
		return -1, errors.ErrUnsupported
	}
	if _, err := s.Seek(offset, io.SeekCurrent); err != nil {
		return -1, err
	}
	c.n += offset
	return c.n, nil
}

// readTOC parses the tar stream r and returns one entry per tar header (as
// archive/tar reports them, long-name and PAX headers folded in) and the
// number of bytes consumed up to and including the end-of-archive blocks.
func readTOC(ctx context.Context, r io.Reader) ([]FileMetadata, int64, error) {
	var toc []FileMetadata
	size, err := walkTOC(ctx, r, func(m FileMetadata) error {
		toc = append(toc, m)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return toc, size, nil
}

// walkTOC parses the tar stream r as readTOC does, handing each entry to fn
// as soon as its header is read (so a caller comparing entries need not
// hold them all), and returns the archive size. An error from fn stops the
// walk and is returned as is.
func walkTOC(ctx context.Context, r io.Reader, fn func(FileMetadata) error) (int64, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return cr.n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read tar entry %d at offset %d: %w", i, cr.n, err)
		}
		m, err := entryFromHeader(h, cr.n)
		if err != nil {
			return 0, fmt.Errorf("tar entry %d (%q): %w", i, h.Name, err)
		}
		if err := fn(m); err != nil {
			return 0, err
		}
	}
}

// entryType maps a tar type flag to the zTOC's type string
// (as in the AWS soci-snapshotter); other types cannot be served and abort a build.
func entryType(flag byte) (string, error) {
	switch flag {
	case tar.TypeReg:
		return TypeReg, nil
	case tar.TypeDir:
		return TypeDir, nil
	case tar.TypeSymlink:
		return TypeSymlink, nil
	case tar.TypeLink:
		return TypeHardlink, nil
	case tar.TypeChar:
		return TypeChar, nil
	case tar.TypeBlock:
		return TypeBlock, nil
	case tar.TypeFifo:
		return TypeFifo, nil
	}
	return "", fmt.Errorf("unsupported tar entry type %q", flag)
}

// entryFromHeader turns a tar header whose data starts at dataOffset into a
// TOC entry. The time is stored in UTC, as the reference tool writes it when
// run with TZ=UTC, so the zTOC does not depend on the builder's time zone.
func entryFromHeader(h *tar.Header, dataOffset int64) (FileMetadata, error) {
	typ, err := entryType(h.Typeflag)
	if err != nil {
		return FileMetadata{}, err
	}
	m := FileMetadata{
		Name:               h.Name,
		Type:               typ,
		UncompressedOffset: dataOffset,
		UncompressedSize:   h.Size,
		Linkname:           h.Linkname,
		Mode:               h.Mode,
		UID:                uint32(h.Uid),
		GID:                uint32(h.Gid),
		Uname:              h.Uname,
		Gname:              h.Gname,
		ModTime:            h.ModTime.UTC(),
		Devmajor:           h.Devmajor,
		Devminor:           h.Devminor,
	}
	if len(h.PAXRecords) > 0 {
		m.PAXRecords = maps.Clone(h.PAXRecords)
	}
	return m, nil
}

// alignBlock rounds n up to a multiple of the tar block size.
func alignBlock(n int64) int64 {
	return (n + tarBlockSize - 1) &^ (tarBlockSize - 1)
}
