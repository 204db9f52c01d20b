package ztoc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"maps"

	"github.com/opencontainers/go-digest"
)

// compressedTap passes the blob through, digesting each span's compressed
// bytes as they go by. Spans may share one byte (a checkpoint in the middle
// of a byte), so two hashers alternate: span j uses hashers[j%2], and span
// j+2 starts no earlier than span j ends.
type compressedTap struct {
	ctx     context.Context
	r       io.Reader
	z       *Ztoc
	pos     int64  // blob bytes read
	next    SpanID // first span whose digest is not yet checked
	hashers [2]hash.Hash
	readErr error // error of the blob reader or the context
	err     error // mismatch found
}

func newCompressedTap(ctx context.Context, r io.Reader, z *Ztoc) *compressedTap {
	return &compressedTap{ctx: ctx, r: r, z: z, hashers: [2]hash.Hash{sha256.New(), sha256.New()}}
}

func (t *compressedTap) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if t.readErr != nil {
		return 0, t.readErr
	}
	if err := t.ctx.Err(); err != nil {
		t.readErr = err
		return 0, err
	}
	n, err := t.r.Read(p)
	if n < 0 || n > len(p) {
		t.readErr = fmt.Errorf("blob reader returned %d bytes for a %d-byte buffer", n, len(p))
		return 0, t.readErr
	}
	if n > 0 {
		if herr := t.hash(p[:n]); herr != nil {
			t.err = herr
			return 0, herr
		}
	}
	if err != nil && err != io.EOF {
		t.readErr = err
	}
	return n, err
}

// hash feeds b, the blob bytes at t.pos, to the spans covering them and
// checks the digest of every span that ends within b.
func (t *compressedTap) hash(b []byte) error {
	start := t.pos
	end := start + int64(len(b))
	t.pos = end
	if end > t.z.CompressedArchiveSize {
		return mismatchf("the layer runs past the ztoc's compressed archive size %d", t.z.CompressedArchiveSize)
	}
	for j := t.next; int(j) < t.z.NumSpans(); j++ {
		s, err := t.z.Span(j)
		if err != nil {
			return fmt.Errorf("%w: %w", err, ErrMismatch)
		}
		if s.CompressedStart >= end {
			return nil
		}
		h := t.hashers[j%2]
		if lo, hi := max(s.CompressedStart, start), min(s.CompressedEnd, end); lo < hi {
			h.Write(b[lo-start : hi-start])
		}
		if s.CompressedEnd > end {
			return nil
		}
		got := digest.NewDigest(digest.SHA256, h)
		h.Reset()
		if got != s.Digest {
			return fmt.Errorf("span %d (compressed [%d,%d)): digest %s in the ztoc, %s in the layer: %w: %w",
				j, s.CompressedStart, s.CompressedEnd, s.Digest, got, ErrSpanDigest, ErrMismatch)
		}
		t.next = j + 1
	}
	return nil
}

// finish checks that the blob ended where the zTOC says and that every
// span's digest was checked.
func (t *compressedTap) finish() error {
	if t.pos != t.z.CompressedArchiveSize {
		return mismatchf("compressed archive size %d in the ztoc, %d in the layer", t.z.CompressedArchiveSize, t.pos)
	}
	if int(t.next) != t.z.NumSpans() {
		return mismatchf("span %d of %d was not reached by the layer", t.next, t.z.NumSpans())
	}
	return nil
}

// spanTap passes the uncompressed stream through to the tar parser and
// cuts it into spans for onSpan. A finished span waits in pending until
// its digest and its closing checkpoint have been checked; a checkpoint is
// reported only on the read after the bytes before it, so two spans can be
// held at once.
type spanTap struct {
	v       *streamVerifier
	src     io.Reader
	pos     int64  // uncompressed bytes read
	cur     SpanID // span the byte at pos belongs to
	buf     []byte // bytes of span cur so far (only with onSpan)
	pending []heldSpan
	spare   [][]byte // buffers of delivered spans, for reuse
	err     error    // mismatch or onSpan error
}

// heldSpan is a finished span waiting to be handed to onSpan.
type heldSpan struct {
	id   SpanID
	data []byte
}

func (t *spanTap) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.src.Read(p)
	if t.v.err != nil {
		return 0, t.v.err
	}
	if ferr := t.feed(p[:n]); ferr != nil {
		t.err = ferr
		return 0, ferr
	}
	return n, err
}

// feed cuts b, the uncompressed bytes at t.pos, into spans.
func (t *spanTap) feed(b []byte) error {
	z := t.v.z
	keep := t.v.onSpan != nil
	for {
		if err := t.closeSpans(); err != nil {
			return err
		}
		if len(b) == 0 || int(t.cur) >= t.v.spans {
			break
		}
		s, err := z.Span(t.cur)
		if err != nil {
			return fmt.Errorf("%w: %w", err, ErrMismatch)
		}
		if t.pos < s.UncompressedStart { // before the first span: no owner
			k := min(int64(len(b)), s.UncompressedStart-t.pos)
			b, t.pos = b[k:], t.pos+k
			continue
		}
		k := min(int64(len(b)), s.UncompressedEnd-t.pos)
		if keep {
			if int64(len(t.buf))+k > maxVerifySpanBytes {
				return mismatchf("span %d holds more than %d uncompressed bytes", t.cur, maxVerifySpanBytes)
			}
			t.buf = append(t.buf, b[:k]...)
		}
		b, t.pos = b[k:], t.pos+k
	}
	t.pos += int64(len(b)) // past the last span: padding, checked by the caller
	return t.deliver(false)
}

// closeSpans moves every span that ends at or before t.pos to pending.
func (t *spanTap) closeSpans() error {
	for int(t.cur) < t.v.spans {
		s, err := t.v.z.Span(t.cur)
		if err != nil {
			return fmt.Errorf("%w: %w", err, ErrMismatch)
		}
		if s.UncompressedEnd > t.pos {
			return nil
		}
		if t.v.onSpan != nil {
			t.pending = append(t.pending, heldSpan{id: t.cur, data: t.buf})
			t.buf = nil
			if n := len(t.spare); n > 0 {
				t.buf, t.spare = t.spare[n-1][:0], t.spare[:n-1]
			}
		}
		t.cur++
	}
	return nil
}

// deliver hands pending spans to onSpan in order, as far as they are
// confirmed: the digest checked and the next checkpoint met, or, for the
// last span, the whole layer checked (final).
func (t *spanTap) deliver(final bool) error {
	for len(t.pending) > 0 {
		h := t.pending[0]
		last := int(h.id) == t.v.spans-1
		confirmed := t.v.comp.next > h.id &&
			(last && final || !last && (t.v.z.Gzip == nil || t.v.cpNext > int(h.id)+1))
		if !confirmed {
			return nil
		}
		if err := t.v.onSpan(h.id, h.data); err != nil {
			return fmt.Errorf("span %d: %w", h.id, err)
		}
		t.pending = t.pending[1:]
		if len(t.spare) < 2 {
			t.spare = append(t.spare, h.data[:0])
		}
	}
	return nil
}

// entryDiff describes the first field where want (the zTOC's entry) and got
// (the layer's) differ, or returns "" when they are equal.
func entryDiff(want, got *FileMetadata) string {
	type field struct {
		name      string
		same      bool
		want, got any
	}
	for _, f := range []field{
		{"name", want.Name == got.Name, want.Name, got.Name},
		{"type", want.Type == got.Type, want.Type, got.Type},
		{"data offset", want.UncompressedOffset == got.UncompressedOffset, want.UncompressedOffset, got.UncompressedOffset},
		{"size", want.UncompressedSize == got.UncompressedSize, want.UncompressedSize, got.UncompressedSize},
		{"link name", want.Linkname == got.Linkname, want.Linkname, got.Linkname},
		{"mode", want.Mode == got.Mode, fmt.Sprintf("%#o", want.Mode), fmt.Sprintf("%#o", got.Mode)},
		{"uid", want.UID == got.UID, want.UID, got.UID},
		{"gid", want.GID == got.GID, want.GID, got.GID},
		{"uname", want.Uname == got.Uname, want.Uname, got.Uname},
		{"gname", want.Gname == got.Gname, want.Gname, got.Gname},
		{"mod time", want.ModTime.Equal(got.ModTime), want.ModTime, got.ModTime},
		{"devmajor", want.Devmajor == got.Devmajor, want.Devmajor, got.Devmajor},
		{"devminor", want.Devminor == got.Devminor, want.Devminor, got.Devminor},
		{"pax records", maps.Equal(want.PAXRecords, got.PAXRecords), want.PAXRecords, got.PAXRecords},
	} {
		if !f.same {
			return fmt.Sprintf("%s %q in the ztoc, %q in the layer", f.name, fmt.Sprint(f.want), fmt.Sprint(f.got))
		}
	}
	return ""
}
