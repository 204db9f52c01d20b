package ztoc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/gzipx"
)

// MaxDeflateRatio bounds how many bytes one compressed byte can inflate to
// (deflate's limit is about 1032:1); a span claiming more is malformed, and
// the bound keeps a hostile zTOC from making a span reader (InflateSpan,
// fs/span) allocate at will.
const MaxDeflateRatio = 1040

// maxPresize is the largest span buffer allocated before its bytes arrive.
const maxPresize = 64 << 20

// SpanFetcher returns the compressed bytes [start, end) of a layer blob.
// The caller closes the reader; ctx cancels the fetch.
type SpanFetcher interface {
	FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error)
}

// FileFetcher is a SpanFetcher over a local copy of the layer blob.
type FileFetcher struct {
	r io.ReaderAt
}

// NewFileFetcher returns a SpanFetcher reading the blob from r, typically
// an *os.File.
func NewFileFetcher(r io.ReaderAt) *FileFetcher { return &FileFetcher{r: r} }

// FetchRange implements SpanFetcher. A range past the end of the file
// yields a short read, which ReadSpan reports.
func (f *FileFetcher) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	if start < 0 || end < start {
		return nil, fmt.Errorf("fetch range [%d,%d): invalid range", start, end)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return io.NopCloser(io.NewSectionReader(f.r, start, end-start)), nil
}

// ReadSpan fetches span id through f, checks its sha256 against the zTOC
// (a mismatch gives an error wrapping ErrSpanDigest and no data) and returns
// the span's uncompressed bytes.
func (z *Ztoc) ReadSpan(ctx context.Context, f SpanFetcher, id SpanID) ([]byte, error) {
	s, err := z.Span(id)
	if err != nil {
		return nil, err
	}
	compressed, err := fetchSpan(ctx, f, s)
	if err != nil {
		return nil, err
	}
	if err := VerifySpan(s, compressed); err != nil {
		return nil, err
	}
	return z.InflateSpan(id, compressed)
}

func fetchSpan(ctx context.Context, f SpanFetcher, s Span) ([]byte, error) {
	rc, err := f.FetchRange(ctx, s.CompressedStart, s.CompressedEnd)
	if err != nil {
		return nil, fmt.Errorf("fetch span %d [%d,%d): %w", s.ID, s.CompressedStart, s.CompressedEnd, err)
	}
	defer rc.Close()
	b, err := readExactly(rc, s.CompressedSize())
	if err != nil {
		return nil, fmt.Errorf("fetch span %d [%d,%d): %w", s.ID, s.CompressedStart, s.CompressedEnd, err)
	}
	return b, nil
}

// readExactly reads exactly want bytes from r and checks that r then ends.
// Sizes up to maxPresize are allocated at once; beyond that (a hostile zTOC
// may declare anything) the buffer grows with what actually arrives.
func readExactly(r io.Reader, want int64) ([]byte, error) {
	var b []byte
	var err error
	if want <= maxPresize {
		b = make([]byte, want)
		var n int
		n, err = io.ReadFull(r, b)
		b = b[:n]
	} else {
		b, err = io.ReadAll(io.LimitReader(r, want))
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if int64(len(b)) != want {
		return nil, fmt.Errorf("got %d bytes, want %d", len(b), want)
	}
	var one [1]byte
	if n, _ := io.ReadFull(r, one[:]); n != 0 {
		return nil, fmt.Errorf("got more than the %d bytes asked for", want)
	}
	return b, nil
}

// VerifySpan checks compressed against the span's digest; a mismatch gives
// an error wrapping ErrSpanDigest.
func VerifySpan(s Span, compressed []byte) error {
	sum := sha256.Sum256(compressed)
	got := digest.NewDigestFromBytes(digest.SHA256, sum[:])
	if got != s.Digest {
		return fmt.Errorf("span %d: sha256 %s, want %s: %w", s.ID, got.Encoded(), s.Digest, ErrSpanDigest)
	}
	return nil
}

// InflateSpan inflates the compressed bytes of span id, which the caller
// has already verified, and returns its uncompressed bytes (exactly
// UncompressedSize of them). For an uncompressed layer the result is
// compressed itself.
func (z *Ztoc) InflateSpan(id SpanID, compressed []byte) ([]byte, error) {
	s, err := z.Span(id)
	if err != nil {
		return nil, err
	}
	if int64(len(compressed)) != s.CompressedSize() {
		return nil, fmt.Errorf("inflate span %d: %d compressed bytes, want %d", id, len(compressed), s.CompressedSize())
	}
	if s.Checkpoint == nil {
		return compressed, nil
	}
	n := s.UncompressedSize()
	if n > MaxDeflateRatio*int64(len(compressed)) {
		return nil, fmt.Errorf("inflate span %d: %d compressed bytes cannot hold %d: %w", id, len(compressed), n, ErrInvalid)
	}
	r, err := gzipx.NewResumeReader(bytes.NewReader(compressed), s.Checkpoint.Bits, s.Checkpoint.Window)
	if err != nil {
		return nil, fmt.Errorf("inflate span %d: %w", id, err)
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, fmt.Errorf("inflate span %d to %d bytes: %w", id, n, err)
	}
	return out, nil
}

// Reader reads the uncompressed tar of a layer through its spans, fetching
// only the spans a read touches. It trusts the zTOC's checkpoints: it is
// the reference span decoder that tests and benchmarks compare fs/span
// with, not a way to read untrusted layers (ociseek ztoc get-file reads
// through VerifyStream instead). It keeps the last span read, so reading a
// file front to back fetches each span once. It is safe for concurrent use.
type Reader struct {
	z     *Ztoc
	f     SpanFetcher
	names map[string]int // cleaned name → index of the last TOC entry

	mu     sync.Mutex // guards lastID and last
	lastID SpanID
	last   []byte
}

// NewReader returns a Reader of z's layer whose blob is read through f.
func NewReader(z *Ztoc, f SpanFetcher) *Reader {
	names := make(map[string]int, len(z.TOC))
	for i := range z.TOC {
		names[CleanName(z.TOC[i].Name)] = i
	}
	return &Reader{z: z, f: f, names: names, lastID: -1}
}

// File returns the TOC entry named name (cleaned as CleanName does); when
// the tar holds several, the last one wins, as it does on extraction.
func (r *Reader) File(name string) (*FileMetadata, bool) {
	i, ok := r.names[CleanName(name)]
	if !ok {
		return nil, false
	}
	return &r.z.TOC[i], true
}

// ReadAt reads the tar bytes [off, off+len(p)). Like io.ReaderAt, it
// returns io.EOF with a short count when the range runs past the end of
// the archive.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	size := r.z.UncompressedArchiveSize
	if off >= size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), size)
	n := 0
	first, last := r.z.SpansFor(off, end-off)
	for id := first; id <= last; id++ {
		s, err := r.z.Span(id)
		if err != nil {
			return n, err
		}
		data, err := r.span(ctx, id)
		if err != nil {
			return n, err
		}
		lo, hi := max(off, s.UncompressedStart), min(end, s.UncompressedEnd)
		if lo < hi {
			n += copy(p[lo-off:hi-off], data[lo-s.UncompressedStart:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *Reader) span(ctx context.Context, id SpanID) ([]byte, error) {
	r.mu.Lock()
	if r.lastID == id {
		b := r.last
		r.mu.Unlock()
		return b, nil
	}
	r.mu.Unlock()
	b, err := r.z.ReadSpan(ctx, r.f, id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.lastID, r.last = id, b
	r.mu.Unlock()
	return b, nil
}

// Open returns a reader of the content of the regular file (or of the file
// a hardlink names) called name.
func (r *Reader) Open(ctx context.Context, name string) (io.Reader, *FileMetadata, error) {
	m, err := r.z.FileEntry(name)
	if err != nil {
		return nil, nil, err
	}
	return &fileReader{ctx: ctx, r: r, off: m.UncompressedOffset, end: m.UncompressedOffset + m.UncompressedSize}, m, nil
}

// fileReader reads [off, end) of the tar through a Reader.
type fileReader struct {
	ctx      context.Context
	r        *Reader
	off, end int64
}

func (f *fileReader) Read(p []byte) (int, error) {
	if f.off >= f.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), f.end-f.off)]
	n, err := f.r.ReadAt(f.ctx, p, f.off)
	f.off += int64(n)
	if errors.Is(err, io.EOF) && f.off < f.end {
		return n, fmt.Errorf("file data ends at %d, past the archive: %w", f.end, io.ErrUnexpectedEOF)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}
