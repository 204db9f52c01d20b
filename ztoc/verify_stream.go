package ztoc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ociseek/ociseek/ztoc/gzipx"
)

// ErrMismatch reports a layer whose bytes contradict the zTOC: the zTOC is
// forged or belongs to another layer. Every verification failure that is
// not an I/O error of the blob reader or a context error wraps it.
var ErrMismatch = errors.New("ztoc does not match the layer")

// maxVerifySpanBytes bounds the uncompressed bytes of one span that
// VerifyStream holds for onSpan. Honest spans hold the span size plus at
// most one deflate block; a span beyond this is refused rather than let a
// hostile stream grow memory without limit.
const maxVerifySpanBytes = 64 << 20

// verifyReadSize is the size of the buffer the zero padding after the end
// of the archive is read through.
const verifyReadSize = 64 << 10

// VerifyStream reads the whole layer blob from its first byte, as one
// continuous stream (never resuming from a stored checkpoint), and checks
// it against z: every checkpoint (position, output offset and window), every
// span digest, every TOC entry and both archive sizes. A span digest and
// the layer digest cover only compressed bytes; this pass is what proves
// that the windows and offsets a reader resumes from, and the file list a
// mount shows, are the layer's own.
//
// onSpan, when not nil, is called in span order with each span's real
// uncompressed bytes [UncompressedStart, UncompressedEnd); the slice is
// valid only during the call. A span is handed over only once its digest
// and the checkpoints at both its ends have matched (the last span: once
// the whole layer has), but earlier spans may have been handed over before
// a later part of the layer turns out to differ. An error onSpan returns
// aborts verification and is returned wrapped.
func VerifyStream(ctx context.Context, blob io.Reader, z *Ztoc, onSpan func(id SpanID, uncompressed []byte) error) error {
	if z == nil {
		return fmt.Errorf("verify ztoc: no ztoc: %w", ErrMismatch)
	}
	if err := z.Validate(); err != nil {
		return fmt.Errorf("verify ztoc: %w: %w", err, ErrMismatch)
	}
	v := &streamVerifier{ctx: ctx, z: z, onSpan: onSpan, spans: z.NumSpans()}
	v.comp = newCompressedTap(ctx, blob, z)
	var src io.Reader = v.comp
	if z.Gzip != nil {
		v.inf = gzipx.NewInflater(v.comp)
		v.inf.SetBoundaryFunc(v.boundary)
		src = v.inf
	}
	v.tap = &spanTap{v: v, src: src}
	if err := v.run(); err != nil {
		return fmt.Errorf("verify ztoc: %w", err)
	}
	return nil
}

// streamVerifier holds the state of one VerifyStream call. It runs in the
// caller's goroutine: archive/tar pulls from the span tap, which pulls from
// the inflater, which pulls from the compressed tap, which pulls from the
// blob; the inflater's boundary callback checks the checkpoints.
type streamVerifier struct {
	ctx    context.Context
	z      *Ztoc
	onSpan func(SpanID, []byte) error
	spans  int

	comp *compressedTap
	inf  *gzipx.Inflater // nil for an uncompressed layer
	tap  *spanTap

	cpNext int    // first checkpoint not yet met by the stream
	window []byte // reused buffer for the stream's window at a checkpoint
	err    error  // first mismatch found by the boundary callback
}

// mismatchf formats an error wrapping ErrMismatch.
func mismatchf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrMismatch)...)
}

// boundary is called by the inflater at every deflate block boundary. The
// zTOC's next checkpoint must lie exactly on one: until the stream reaches
// its position nothing is checked; at it, Out and the window must agree;
// past it without a boundary there, the checkpoint is a forgery.
func (v *streamVerifier) boundary(b gzipx.Boundary) {
	cps := v.z.Gzip.Checkpoints
	if v.err != nil || v.cpNext >= len(cps) {
		return
	}
	c := &cps[v.cpNext]
	// Position order: a smaller In is earlier; at the same In, more unused
	// bits in byte In−1 is earlier.
	if b.In < c.In || (b.In == c.In && b.Bits > c.Bits) {
		return
	}
	if b.In != c.In || b.Bits != c.Bits {
		v.err = mismatchf("checkpoint %d at in %d bits %d: the stream has no block boundary there (it passes to one at in %d bits %d)",
			v.cpNext, c.In, c.Bits, b.In, b.Bits)
		return
	}
	if b.Out != c.Out {
		v.err = mismatchf("checkpoint %d at in %d: out %d in the ztoc, %d in the stream", v.cpNext, c.In, c.Out, b.Out)
		return
	}
	if v.window == nil {
		v.window = make([]byte, 0, WindowSize)
	}
	v.window = v.inf.Window(v.window[:0])
	if !bytes.Equal(v.window, c.Window) {
		v.err = mismatchf("checkpoint %d at in %d: window differs from the stream at byte %d",
			v.cpNext, c.In, windowDiff(v.window, c.Window))
		return
	}
	v.cpNext++
}

// windowDiff returns the index of the first byte where a and b differ (the
// shorter length when one is a prefix of the other).
func windowDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// run parses the tar stream, comparing each entry with the TOC, then reads
// the padding to the end of the blob and makes the closing checks.
func (v *streamVerifier) run() error {
	toc := v.z.TOC
	next := 0
	size, err := walkTOC(v.ctx, v.tap, func(m FileMetadata) error {
		if next >= len(toc) {
			return mismatchf("the layer has tar entry %d (%q) after the ztoc's last entry", next, m.Name)
		}
		if d := entryDiff(&toc[next], &m); d != "" {
			return mismatchf("toc entry %d (%q): %s", next, toc[next].Name, d)
		}
		next++
		return nil
	})
	if err != nil {
		return v.classify(err)
	}
	if next != len(toc) {
		return mismatchf("the layer's tar ends after %d entries but the ztoc lists %d (entry %d is %q)",
			next, len(toc), next, toc[next].Name)
	}
	if size != v.z.UncompressedArchiveSize {
		return mismatchf("uncompressed archive size %d in the ztoc, %d in the layer", v.z.UncompressedArchiveSize, size)
	}
	if err := v.drainPadding(size); err != nil {
		return v.classify(err)
	}
	return v.finish()
}

// drainPadding reads the stream after the end-of-archive blocks to its
// end; only zero bytes (record padding) may be there.
func (v *streamVerifier) drainPadding(at int64) error {
	buf := make([]byte, verifyReadSize)
	for {
		n, err := v.tap.Read(buf)
		if i := firstNonZero(buf[:n]); i >= 0 {
			return mismatchf("non-zero byte at uncompressed offset %d after the end of the archive (%d)", at+int64(i), v.z.UncompressedArchiveSize)
		}
		at += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// classify picks the error to report for a failed read: a mismatch found
// by a tap or the boundary callback comes first (archive/tar may have
// replaced it with its own), then the blob reader's or the context's error
// as is; anything else (bad deflate data, a broken tar) is the layer
// contradicting the zTOC.
func (v *streamVerifier) classify(err error) error {
	switch {
	case v.err != nil:
		return v.err
	case v.tap.err != nil:
		return v.tap.err
	case v.comp.err != nil:
		return v.comp.err
	case v.comp.readErr != nil:
		return fmt.Errorf("read layer at offset %d: %w", v.comp.pos, v.comp.readErr)
	case v.ctx.Err() != nil:
		return v.ctx.Err()
	case errors.Is(err, ErrMismatch):
		return err
	}
	return fmt.Errorf("%w: %w", err, ErrMismatch)
}

// finish makes the checks that need the whole stream, then hands the last
// span over.
func (v *streamVerifier) finish() error {
	if v.err != nil {
		return v.err
	}
	if v.z.Gzip != nil && v.cpNext < len(v.z.Gzip.Checkpoints) {
		c := v.z.Gzip.Checkpoints[v.cpNext]
		return mismatchf("checkpoint %d at in %d bits %d: the stream ends before it", v.cpNext, c.In, c.Bits)
	}
	if err := v.comp.finish(); err != nil {
		return err
	}
	return v.tap.deliver(true)
}
