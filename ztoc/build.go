package ztoc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// BuildOptions tunes Build. The zero value gives the reference tool's
// defaults.
type BuildOptions struct {
	// SpanSize is the number of uncompressed bytes after which a new span
	// may start; 0 means DefaultSpanSize.
	SpanSize int64
	// BuildToolIdentifier is written into the zTOC; "" means
	// DefaultBuildToolIdentifier.
	BuildToolIdentifier string
}

func (o BuildOptions) withDefaults() (BuildOptions, error) {
	if o.SpanSize == 0 {
		o.SpanSize = DefaultSpanSize
	}
	if o.SpanSize < 0 {
		return o, fmt.Errorf("span size %d is negative", o.SpanSize)
	}
	if o.BuildToolIdentifier == "" {
		o.BuildToolIdentifier = DefaultBuildToolIdentifier
	}
	return o, nil
}

// layerFormat is what the first bytes of a layer blob say it is.
type layerFormat int

const (
	formatUnknown layerFormat = iota
	formatGzip
	formatTar
	formatZstd
)

// tarBlockSize is the size of a tar header or data block.
const tarBlockSize = 512

// Build reads a layer blob once, as a stream, and returns its zTOC: the TOC
// of its tar entries, the span checkpoints and the span digests, laid out as
// the reference tooling lays them out, so that Marshal of the result is
// byte-identical to the reference's zTOC for the same layer, span size and
// build tool identifier.
//
// The compression is detected from the content: gzip (any number of
// members) or an uncompressed tar. zstd and anything unrecognised give an
// error wrapping ErrUnindexable. A tar entry of a type the zTOC cannot
// describe (GNU sparse, PAX global header, ...) aborts the build, as in the
// reference. Memory stays bounded by a few deflate blocks and buffers, not
// by the layer or the span size.
func Build(ctx context.Context, layer io.Reader, opts BuildOptions) (*Ztoc, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("build ztoc: %w", err)
	}
	br := bufio.NewReaderSize(layer, 64<<10)
	head, err := br.Peek(tarBlockSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("build ztoc: read layer start: %w", err)
	}
	var z *Ztoc
	switch detectFormat(head) {
	case formatGzip:
		z, err = buildGzip(ctx, br, opts)
	case formatTar:
		z, err = buildTar(ctx, br, opts)
	case formatZstd:
		return nil, fmt.Errorf("build ztoc: layer is zstd-compressed: %w", ErrUnindexable)
	default:
		if len(head) == 0 {
			return nil, fmt.Errorf("build ztoc: layer is empty: %w", ErrUnindexable)
		}
		return nil, fmt.Errorf("build ztoc: layer is neither gzip nor tar (starts with % x): %w",
			head[:min(len(head), 8)], ErrUnindexable)
	}
	if err != nil {
		return nil, err
	}
	// A zTOC that readers would refuse (hostile names, overlapping entries)
	// is no use to anyone: such a layer cannot be served lazily.
	if err := z.Validate(); err != nil {
		return nil, fmt.Errorf("build ztoc: %w: %w", ErrUnindexable, err)
	}
	return z, nil
}

// detectFormat classifies a layer by its first bytes (up to one tar block).
func detectFormat(head []byte) layerFormat {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return formatGzip
	case len(head) >= 4 && bytes.Equal(head[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return formatZstd
	case len(head) < tarBlockSize:
		return formatUnknown
	case bytes.HasPrefix(head[257:], []byte("ustar")):
		return formatTar
	case isZeroBlock(head[:tarBlockSize]), validTarChecksum(head[:tarBlockSize]):
		return formatTar
	}
	return formatUnknown
}

func isZeroBlock(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// validTarChecksum reports whether a V7-style header block carries a
// checksum matching its bytes (the checksum field counted as spaces; the
// signed sum is accepted too, as old tar writers used it).
func validTarChecksum(blk []byte) bool {
	field := bytes.TrimRight(bytes.TrimLeft(blk[148:156], " \x00"), " \x00")
	want, err := strconv.ParseInt(string(field), 8, 64)
	if err != nil || len(field) == 0 {
		return false
	}
	var unsigned, signed int64
	for i, c := range blk {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// buildTar indexes an uncompressed tar layer: fixed-size spans whose
// digests are taken over the raw bytes (as in the AWS soci-snapshotter).
func buildTar(ctx context.Context, r io.Reader, opts BuildOptions) (*Ztoc, error) {
	h := newFixedSpanHasher(opts.SpanSize)
	toc, tarSize, err := readTOC(ctx, io.TeeReader(r, h))
	if err != nil {
		return nil, fmt.Errorf("build ztoc: %w", err)
	}
	// Bytes after the end-of-archive blocks (record padding) still belong to
	// the blob and so to the last span.
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("build ztoc: read layer after end of archive: %w", err)
	}
	digests := h.finish()
	if len(digests) == 0 {
		return nil, fmt.Errorf("build ztoc: tar layer has no bytes: %w", ErrUnindexable)
	}
	return &Ztoc{
		Version:                 Version,
		BuildToolIdentifier:     opts.BuildToolIdentifier,
		CompressedArchiveSize:   h.total,
		UncompressedArchiveSize: tarSize,
		TOC:                     toc,
		CompressionAlgorithm:    CompressionUncompressed,
		MaxSpanID:               SpanID(len(digests) - 1),
		SpanDigests:             digests,
		Tar:                     &TarZinfo{Version: 2, SpanSize: opts.SpanSize, Size: h.total},
	}, nil
}

// fixedSpanHasher is an io.Writer that digests its input in consecutive
// pieces of size bytes.
type fixedSpanHasher struct {
	size    int64
	total   int64
	h       hash.Hash
	digests []digest.Digest
}

func newFixedSpanHasher(size int64) *fixedSpanHasher {
	return &fixedSpanHasher{size: size, h: sha256.New()}
}

func (w *fixedSpanHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := w.size - w.total%w.size
		k := int(min(room, int64(len(p))))
		w.h.Write(p[:k])
		w.total += int64(k)
		p = p[k:]
		if w.total%w.size == 0 {
			w.digests = append(w.digests, digest.NewDigest(digest.SHA256, w.h))
			w.h.Reset()
		}
	}
	return n, nil
}

// finish closes the last, short span and returns every span digest.
func (w *fixedSpanHasher) finish() []digest.Digest {
	if w.total%w.size != 0 {
		w.digests = append(w.digests, digest.NewDigest(digest.SHA256, w.h))
		w.h.Reset()
	}
	return w.digests
}
