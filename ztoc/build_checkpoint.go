package ztoc

import (
	"context"
	"fmt"
	"io"

	"github.com/ociseek/ociseek/ztoc/gzipx"
)

// gzipIndexer drives the inflater, places the checkpoints and cuts the
// compressed bytes into spans for the hasher.
//
// Checkpoints are decided in two steps. The boundary callback applies the
// reference placement rule (as in the AWS soci-snapshotter) and records candidates
// with their windows; after each read, settle accepts them once the tar
// parser shows the archive reaches them. A candidate past the end of the
// archive (only record padding or garbage follows the end-of-archive
// blocks there) is dropped with all later ones: the reference would keep
// it, but a zTOC with a checkpoint past its archive size is invalid, so
// no reader, ours included, would use it.
type gzipIndexer struct {
	ctx      context.Context
	spanSize int64
	src      *pendingReader
	hashCh   chan<- hashCmd
	progress *tarProgress
	inf      *gzipx.Inflater

	checkpoints []Checkpoint
	candidates  []Checkpoint // placed by the rule, not yet settled
	lastOut     int64        // Out of the latest candidate or checkpoint
	safeIn      int64        // bytes before it belong to known spans
	pastEnd     bool         // a candidate lay past the archive's end
	allocated   int          // data buffers made so far
	err         error        // first error from the boundary callback
}

// run inflates the whole blob, sending tar bytes on dataCh in buffers taken
// from free.
func (x *gzipIndexer) run(dataCh chan<- []byte, free <-chan []byte) error {
	x.inf = gzipx.NewInflater(x.src)
	x.inf.SetBoundaryFunc(x.boundary)
	for {
		buf, err := x.nextBuf(free)
		if err != nil {
			return err
		}
		n, err := fillFrom(x.inf, buf)
		if x.err != nil {
			return x.err
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("inflate at compressed offset %d: %w", x.src.pos, err)
		}
		if n > 0 {
			select {
			case dataCh <- buf[:n]:
			case <-x.ctx.Done():
				return x.ctx.Err()
			}
		}
		// Every tar byte up to the candidates has been sent, so the
		// parser can get as far as they are.
		if serr := x.settle(); serr != nil {
			return serr
		}
		if err == io.EOF {
			return x.finish()
		}
	}
}

// nextBuf returns a free data buffer, allocating up to dataBufs of them
// only as the tar parser falls behind, so small layers stay cheap.
func (x *gzipIndexer) nextBuf(free <-chan []byte) ([]byte, error) {
	select {
	case b := <-free:
		return b, nil
	default:
	}
	if x.allocated < dataBufs {
		x.allocated++
		return make([]byte, dataBufSize), nil
	}
	select {
	case b := <-free:
		return b, nil
	case <-x.ctx.Done():
		return nil, x.ctx.Err()
	}
}

// fillFrom reads until buf is at least half full, so chunks stay large even
// though the inflater returns at every block boundary.
func fillFrom(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf)/2 {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// boundary is called by the inflater at every deflate block boundary. A
// boundary is a candidate when it is the first one, or is not inside a
// member's last block and more than spanSize bytes have come out since the
// last candidate. (The reference tests out == 0 rather than "first"; that
// differs only for a stream whose first block is empty, where the
// reference would make two checkpoints at out 0, which no reader accepts.)
func (x *gzipIndexer) boundary(b gzipx.Boundary) {
	if x.err != nil {
		return
	}
	// A later span starts at In'−1 ≥ In−1 at the earliest.
	x.safeIn = b.In - 1
	first := len(x.checkpoints)+len(x.candidates) == 0
	if x.pastEnd || b.LastBlock || !(first || b.Out-x.lastOut > x.spanSize) {
		return
	}
	cp := Checkpoint{In: b.In, Out: b.Out, Bits: b.Bits, Window: x.inf.Window(make([]byte, 0, WindowSize))}
	if len(cp.Window) != WindowSize {
		x.err = fmt.Errorf("inflater window of %d bytes at boundary (%d,%d): %w", len(cp.Window), b.In, b.Out, ErrInvalid)
		return
	}
	x.candidates = append(x.candidates, cp)
	x.lastOut = b.Out
}

// settle accepts or drops the pending candidates, then hands the hasher
// the bytes that now surely belong to the current span.
func (x *gzipIndexer) settle() error {
	for _, c := range x.candidates {
		if x.pastEnd {
			break
		}
		within, err := x.progress.reaches(x.ctx, c.Out)
		if err != nil {
			return err
		}
		if !within {
			x.pastEnd = true
			break
		}
		if err := x.accept(c); err != nil {
			return err
		}
	}
	x.candidates = x.candidates[:0]
	if len(x.checkpoints) > 0 && x.safeIn > x.src.pendStart {
		return x.send(hashCmd{data: x.src.cut(x.safeIn)})
	}
	return nil
}

// accept makes c a checkpoint: the current span ends at c.In and the next
// starts at c.In, or at c.In−1 when that byte is shared.
func (x *gzipIndexer) accept(c Checkpoint) error {
	first := len(x.checkpoints) == 0
	x.checkpoints = append(x.checkpoints, c)
	if first {
		start := c.In
		if c.Bits != 0 {
			start--
		}
		x.src.cut(start) // the gzip header belongs to no span
		return nil
	}
	return x.send(hashCmd{data: x.src.cut(c.In), finish: true, carryLast: c.Bits != 0})
}

// finish closes the last span at the end of the blob: whatever follows the
// inflater's last read (nothing, for a well-formed gzip file) is part of it.
func (x *gzipIndexer) finish() error {
	if len(x.checkpoints) == 0 {
		return fmt.Errorf("gzip stream has no deflate block: %w", ErrInvalid)
	}
	if _, err := io.Copy(io.Discard, x.src); err != nil {
		return fmt.Errorf("read layer after gzip stream: %w", err)
	}
	return x.send(hashCmd{data: x.src.cut(x.src.pos), finish: true})
}

func (x *gzipIndexer) send(c hashCmd) error {
	select {
	case x.hashCh <- c:
		return nil
	case <-x.ctx.Done():
		return x.ctx.Err()
	}
}
