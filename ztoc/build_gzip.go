package ztoc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// The gzip build runs as three goroutines joined by bounded channels, so
// that on two cores inflating (the bulk of the work) overlaps with tar
// parsing and span hashing:
//
//	inflate:  blob → gzipx.Inflater → checkpoints; tar bytes → dataCh;
//	          compressed bytes, cut at span boundaries → hashCh
//	tar:      dataCh → archive/tar → TOC, archive size
//	hash:     hashCh → sha256 per span → span digests
//
// The inflater reads ahead of the block boundaries it reports, so the
// compressed bytes it has read but whose span is not yet known wait in a
// pending buffer; at each boundary everything before In−1 is handed to the
// hasher (a later span can start no earlier than In−1), and at a checkpoint
// the current span is closed at In.

const (
	// dataBufSize is the size of the tar-byte buffers passed from the
	// inflater to the tar parser; dataBufs of them circulate.
	dataBufSize = 256 << 10
	dataBufs    = 8
	// hashQueue bounds the compressed chunks waiting to be hashed.
	hashQueue = 16
	// maxPending bounds the compressed bytes held back between two block
	// boundaries. Real deflate encoders end blocks every few tens of KiB;
	// only a hostile stream comes near this.
	maxPending = 256 << 20
)

// hashCmd tells the hash goroutine to digest data into the current span,
// then, if finish, to close that span; with carryLast, the last byte of data
// also opens the next span (a checkpoint in the middle of a byte).
type hashCmd struct {
	data      []byte
	finish    bool
	carryLast bool
}

func buildGzip(ctx context.Context, r io.Reader, opts BuildOptions) (*Ztoc, error) {
	g, gctx := errgroup.WithContext(ctx)
	dataCh := make(chan []byte, dataBufs)
	free := make(chan []byte, dataBufs) // filled lazily by the inflater
	hashCh := make(chan hashCmd, hashQueue)

	progress := &tarProgress{changed: make(chan struct{}, 1)}
	inf := &gzipIndexer{ctx: gctx, spanSize: opts.SpanSize, src: &pendingReader{r: r}, hashCh: hashCh, progress: progress}
	var (
		toc     []FileMetadata
		tarSize int64
		digests []digest.Digest
	)
	g.Go(func() error {
		defer close(dataCh)
		defer close(hashCh)
		return inf.run(dataCh, free)
	})
	g.Go(func() error {
		var err error
		toc, tarSize, err = readTOCFromChunks(gctx, dataCh, free, progress)
		return err
	})
	g.Go(func() error {
		digests = hashSpans(hashCh)
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("build ztoc: %w", err)
	}
	if len(digests) != len(inf.checkpoints) || len(digests) == 0 {
		return nil, fmt.Errorf("build ztoc: %d span digests for %d checkpoints: %w",
			len(digests), len(inf.checkpoints), ErrInvalid)
	}
	return &Ztoc{
		Version:                 Version,
		BuildToolIdentifier:     opts.BuildToolIdentifier,
		CompressedArchiveSize:   inf.src.pos,
		UncompressedArchiveSize: tarSize,
		TOC:                     toc,
		CompressionAlgorithm:    CompressionGzip,
		MaxSpanID:               SpanID(len(digests) - 1),
		SpanDigests:             digests,
		Gzip:                    &GzipZinfo{SpanSize: opts.SpanSize, Checkpoints: inf.checkpoints},
	}, nil
}

// hashSpans digests the compressed chunks of each span in order.
func hashSpans(hashCh <-chan hashCmd) []digest.Digest {
	var digests []digest.Digest
	h := sha256.New()
	for c := range hashCh {
		h.Write(c.data)
		if !c.finish {
			continue
		}
		digests = append(digests, digest.NewDigest(digest.SHA256, h))
		h.Reset()
		if c.carryLast && len(c.data) > 0 {
			h.Write(c.data[len(c.data)-1:])
		}
	}
	return digests
}

// readTOCFromChunks parses the tar stream arriving as chunks on dataCh and
// then drains the channel, so the inflater always runs to the end of the
// blob (the trailer check and the last span digest need it).
func readTOCFromChunks(ctx context.Context, dataCh <-chan []byte, free chan<- []byte, p *tarProgress) ([]FileMetadata, int64, error) {
	cr := &chunkReader{ctx: ctx, ch: dataCh, free: free, progress: p}
	toc, size, err := readTOC(ctx, cr)
	if err != nil {
		return nil, 0, err
	}
	p.set(size, true)
	for b := range dataCh {
		free <- b[:cap(b)]
	}
	return toc, size, nil
}

// chunkReader is an io.Reader over the chunks sent on ch; it gives each
// chunk's buffer back on free once consumed.
type chunkReader struct {
	ctx  context.Context
	ch   <-chan []byte
	free chan<- []byte
	cur  []byte
	buf  []byte
	skip int64 // bytes to drop before the next read

	progress *tarProgress
	consumed int64 // bytes handed out or skipped
}

// Seek skips forward; the skip happens lazily on the next Read, which
// reports a stream that ends too early. It lets archive/tar pass over file
// data without copying it.
func (c *chunkReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return -1, errors.ErrUnsupported
	}
	c.skip += offset
	c.consumed += offset
	c.progress.set(c.consumed, false)
	return 0, nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.cur) == 0 || c.skip > 0 {
		if k := min(c.skip, int64(len(c.cur))); k > 0 {
			c.cur, c.skip = c.cur[k:], c.skip-k
			continue
		}
		if c.buf != nil {
			c.free <- c.buf[:cap(c.buf)]
			c.buf = nil
		}
		select {
		case b, ok := <-c.ch:
			if !ok {
				return 0, io.EOF
			}
			c.buf, c.cur = b, b
		case <-c.ctx.Done():
			return 0, c.ctx.Err()
		}
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	c.consumed += int64(n)
	c.progress.set(c.consumed, false)
	return n, nil
}

// tarProgress tells the inflater how far the tar parser has got, so that no
// checkpoint lands past the end of the archive.
type tarProgress struct {
	consumed atomic.Int64  // tar bytes the parser consumed (skips included)
	done     atomic.Bool   // the parser reached the end; consumed is final
	changed  chan struct{} // capacity 1: signalled after every change
}

func (p *tarProgress) set(consumed int64, done bool) {
	p.consumed.Store(consumed)
	if done {
		p.done.Store(true)
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// reaches waits until the parser has either consumed out bytes (the tar
// runs at least that far) or ended before them, and says which.
func (p *tarProgress) reaches(ctx context.Context, out int64) (bool, error) {
	for {
		done := p.done.Load()
		if p.consumed.Load() >= out {
			return true, nil
		}
		if done {
			return false, nil
		}
		select {
		case <-p.changed:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// pendingReader reads the blob and keeps the bytes read but not yet handed
// to a span hasher; pending holds the bytes [pendStart, pos).
//
// The bytes live in slabs: cut hands out a piece of the current slab
// without copying, and reads append after it, so the hasher can own the
// piece while the slab fills. Only when a slab is full does the small
// unhanded remainder move to a fresh one.
type pendingReader struct {
	r         io.Reader
	pos       int64
	pendStart int64
	pending   []byte
	nextSlab  int // size of the next slab; grows to slabSize
}

// Slabs start small, so small layers stay cheap, and double up to slabSize.
const (
	firstSlabSize = 64 << 10
	slabSize      = 4 << 20
)

func (p *pendingReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if len(p.pending)+n > cap(p.pending) {
		if len(p.pending)+n > maxPending {
			return n, fmt.Errorf("deflate block at compressed offset %d spans more than %d bytes", p.pendStart, maxPending)
		}
		p.nextSlab = min(max(2*p.nextSlab, firstSlabSize), slabSize)
		slab := make([]byte, len(p.pending), max(p.nextSlab, 2*(len(p.pending)+n)))
		copy(slab, p.pending)
		p.pending = slab
	}
	p.pending = append(p.pending, b[:n]...)
	p.pos += int64(n)
	return n, err
}

// cut removes and returns the pending bytes before offset to. The caller
// owns the returned slice: later reads never write into it.
func (p *pendingReader) cut(to int64) []byte {
	k := int(min(max(to-p.pendStart, 0), int64(len(p.pending))))
	out := p.pending[:k:k]
	p.pending = p.pending[k:]
	p.pendStart += int64(k)
	return out
}
