package ztoc

import (
	"fmt"
	"sort"

	"github.com/opencontainers/go-digest"
)

// Span is one independently fetchable and decompressible piece of a layer
// (as in the AWS soci-snapshotter).
//
// For a gzip layer, span i covers the uncompressed bytes [out_i, out_{i+1})
// and the compressed bytes [in_i − 1, in_{i+1}) when bits_i ≠ 0, otherwise
// [in_i, in_{i+1}). So when a checkpoint sits mid-byte, that byte belongs to
// both neighbouring spans; the gzip header [0, in_0) belongs to no span; the
// last span runs to the end of the blob, trailer included.
//
// For an uncompressed layer, span i is [i·S, (i+1)·S) in both coordinates,
// capped at the blob size.
type Span struct {
	// ID is the span's number.
	ID SpanID
	// CompressedStart and CompressedEnd (exclusive) bound the span's bytes in
	// the layer blob; their sha256 is Digest.
	CompressedStart, CompressedEnd int64
	// UncompressedStart and UncompressedEnd (exclusive) bound the tar bytes
	// the span inflates to.
	UncompressedStart, UncompressedEnd int64
	// Digest is the sha256 of the span's compressed bytes.
	Digest digest.Digest
	// Checkpoint is where inflating the span starts; nil for an
	// uncompressed layer.
	Checkpoint *Checkpoint
}

// CompressedSize is the number of blob bytes the span covers.
func (s Span) CompressedSize() int64 { return s.CompressedEnd - s.CompressedStart }

// UncompressedSize is the number of tar bytes the span holds.
func (s Span) UncompressedSize() int64 { return s.UncompressedEnd - s.UncompressedStart }

// NumSpans is the number of spans of the layer (MaxSpanID+1), as far as the
// span table agrees with it; 0 for a zTOC without spans.
func (z *Ztoc) NumSpans() int {
	switch {
	case z.Gzip != nil:
		return len(z.Gzip.Checkpoints)
	case z.Tar != nil:
		return int(z.MaxSpanID) + 1
	}
	return 0
}

// Span returns the geometry of span id. It fails (wrapping ErrInvalid) when
// id is out of range or the zTOC's tables disagree about it, so callers can
// use a zTOC that was not validated without risking a panic.
func (z *Ztoc) Span(id SpanID) (Span, error) {
	n := z.NumSpans()
	if id < 0 || int(id) >= n || int(id) >= len(z.SpanDigests) {
		return Span{}, fmt.Errorf("span %d of %d: %w", id, n, ErrInvalid)
	}
	s := Span{ID: id, Digest: z.SpanDigests[id]}
	if z.Gzip != nil {
		return z.gzipSpan(s)
	}
	return z.tarSpan(s)
}

func (z *Ztoc) gzipSpan(s Span) (Span, error) {
	cps := z.Gzip.Checkpoints
	i := int(s.ID)
	c := &cps[i]
	s.Checkpoint = c
	s.CompressedStart, s.UncompressedStart = c.In, c.Out
	if c.Bits != 0 {
		s.CompressedStart--
	}
	if i+1 < len(cps) {
		s.CompressedEnd, s.UncompressedEnd = cps[i+1].In, cps[i+1].Out
	} else {
		s.CompressedEnd, s.UncompressedEnd = z.CompressedArchiveSize, z.UncompressedArchiveSize
	}
	if s.CompressedStart < 0 || s.CompressedEnd <= s.CompressedStart ||
		s.UncompressedEnd < s.UncompressedStart || s.UncompressedStart < 0 {
		return Span{}, fmt.Errorf("span %d: compressed [%d,%d) uncompressed [%d,%d): %w",
			s.ID, s.CompressedStart, s.CompressedEnd, s.UncompressedStart, s.UncompressedEnd, ErrInvalid)
	}
	return s, nil
}

func (z *Ztoc) tarSpan(s Span) (Span, error) {
	size := z.Tar.SpanSize
	if size <= 0 {
		return Span{}, fmt.Errorf("span %d: span size %d: %w", s.ID, size, ErrInvalid)
	}
	s.UncompressedStart = int64(s.ID) * size
	s.UncompressedEnd = min(s.UncompressedStart+size, z.Tar.Size)
	if s.UncompressedEnd <= s.UncompressedStart {
		return Span{}, fmt.Errorf("span %d starts at %d, past the layer's %d bytes: %w",
			s.ID, s.UncompressedStart, z.Tar.Size, ErrInvalid)
	}
	s.CompressedStart, s.CompressedEnd = s.UncompressedStart, s.UncompressedEnd
	return s, nil
}

// SpanOf returns the span holding the tar byte at uncompressedOffset: the
// largest i with out_i ≤ offset. Offsets before the first span map to span 0
// and offsets past the end to the last span, as the reference does.
func (z *Ztoc) SpanOf(uncompressedOffset int64) SpanID {
	n := z.NumSpans()
	if n == 0 {
		return 0
	}
	if z.Gzip == nil {
		if z.Tar == nil || z.Tar.SpanSize <= 0 || uncompressedOffset < 0 {
			return 0
		}
		return SpanID(min(uncompressedOffset/z.Tar.SpanSize, int64(n-1)))
	}
	cps := z.Gzip.Checkpoints
	// The first index whose checkpoint lies past the offset, minus one.
	i := sort.Search(len(cps), func(i int) bool { return cps[i].Out > uncompressedOffset }) - 1
	return SpanID(max(i, 0))
}

// SpansFor returns the first and last span holding any of the tar bytes
// [off, off+size). An empty range maps to the single span holding off.
func (z *Ztoc) SpansFor(off, size int64) (first, last SpanID) {
	first = z.SpanOf(off)
	if size <= 0 {
		return first, first
	}
	return first, z.SpanOf(off + size - 1)
}

// HeaderRange returns the blob bytes [start, end) before the first span: the
// gzip header, which no span covers. It is empty for an uncompressed layer.
func (z *Ztoc) HeaderRange() (start, end int64) {
	if z.Gzip == nil || len(z.Gzip.Checkpoints) == 0 {
		return 0, 0
	}
	c := z.Gzip.Checkpoints[0]
	end = c.In
	if c.Bits != 0 {
		end--
	}
	return 0, max(end, 0)
}
