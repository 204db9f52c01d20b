package gzipx

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Buffer geometry. The output buffer keeps WindowSize bytes of history in
// front of a chunk of fresh output, plus slack so that the fast loop may
// write a whole maximal match (and the up to 7 bytes its word copies spill)
// without checking the end of the buffer for every symbol.
const (
	inBufSize = 64 << 10
	outChunk  = 128 << 10
	maxMatch  = 258
	outSlack  = 320
	outLimit  = WindowSize + outChunk
	outSize   = outLimit + outSlack
	// minFill is the least output a fill decodes, so that callers reading
	// a few bytes at a time do not pay the state machine per call.
	minFill = 16 << 10
	// maxEmptyReads bounds consecutive (0, nil) reads from the source.
	maxEmptyReads = 100
)

// Decoder states: where in the gzip/deflate grammar the next bits belong.
const (
	stHeader     = iota // a gzip member header (or the end of input)
	stBlockStart        // a deflate block header
	stStored            // the data of a stored block
	stHuffman           // the symbols of a fixed or dynamic block
	stTrailer           // the CRC-32 and ISIZE after a member's last block
	stDone              // nothing more: the input has ended cleanly
)

// decoder is the state shared by Inflater and the resume reader: input
// buffer and bit accumulator, output buffer with history, code tables and
// the position in the gzip grammar.
type decoder struct {
	src     io.Reader
	in      []byte // input buffer; in[pos:] is not yet in the bit buffer
	pos     int
	inBase  int64 // absolute compressed offset of in[0]
	srcErr  error // sticky error of src (io.EOF once drained)
	bits    uint64
	nbits   uint
	out     []byte // history and output; see outSize
	op      int    // next write index in out
	rp      int    // next index in out to hand to the caller
	outBase int64  // absolute uncompressed offset of out[0]
	hist    int    // first index in out usable as match history

	state      int
	final      bool // the current block is its member's last
	storedLeft int
	lt         *[litTableSize]uint32 // current literal/length table
	dt         *[distTableSize]uint32
	dynLit     [litTableSize]uint32
	dynDist    [distTableSize]uint32
	fixLit     *[litTableSize]uint32 // built on first use
	fixDist    *[distTableSize]uint32
	lens       [maxLitSyms + maxDistSyms]uint8

	resume     bool   // no trailer checks; the input may end at a block start
	members    int    // members whose header has been read
	crc        uint32 // CRC-32 of the current member's output up to crcPos
	crcPos     int
	memberSize uint32 // ISIZE so far (output of the member mod 2^32) up to crcPos
	onBoundary func(Boundary)
	err        error // sticky; io.EOF after a clean end
}

func (d *decoder) init(src io.Reader, resume bool) {
	d.src = src
	d.in = make([]byte, 0, inBufSize)
	d.out = make([]byte, outSize)
	d.op, d.rp, d.hist, d.crcPos = WindowSize, WindowSize, WindowSize, WindowSize
	d.outBase = -WindowSize
	d.resume = resume
}

// bitPos is the absolute position, in bits, of the next unconsumed bit.
func (d *decoder) bitPos() int64 {
	return (d.inBase+int64(d.pos))*8 - int64(d.nbits)
}

// boundary reports the current position, which must be a block boundary,
// to the callback.
func (d *decoder) boundary(afterHeader bool) {
	if d.onBoundary == nil {
		return
	}
	p := d.bitPos()
	in := (p + 7) / 8
	d.onBoundary(Boundary{
		In:          in,
		Out:         d.outBase + int64(d.op),
		Bits:        uint8(in*8 - p),
		AfterHeader: afterHeader,
		LastBlock:   !afterHeader && d.final,
	})
}

// readInput refills the input buffer from src once all of it is in the bit
// buffer. It returns io.EOF when src is drained.
func (d *decoder) readInput() error {
	if d.pos < len(d.in) {
		return nil
	}
	if d.srcErr != nil {
		return d.srcErr
	}
	d.inBase += int64(d.pos)
	d.pos = 0
	buf := d.in[:cap(d.in)]
	for range maxEmptyReads {
		n, err := d.src.Read(buf)
		if n < 0 || n > len(buf) {
			n, err = 0, fmt.Errorf("gzipx: source returned invalid count %d", n)
		}
		d.in = buf[:n]
		if err != nil {
			d.srcErr = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	d.srcErr = io.ErrNoProgress
	return d.srcErr
}

// pull loads input into the bit buffer until it holds at least 56 bits or
// the input is exhausted. Running out of input is not an error here: callers
// check that the bits they need are present.
func (d *decoder) pull() error {
	for d.nbits < 56 {
		if d.pos >= len(d.in) {
			if err := d.readInput(); err != nil {
				if err == io.EOF {
					return nil
				}
				return fmt.Errorf("gzipx: read compressed input: %w", err)
			}
			continue
		}
		d.bits |= uint64(d.in[d.pos]) << (d.nbits & 63)
		d.pos++
		d.nbits += 8
	}
	return nil
}

// getBits consumes and returns the next n (≤ 32) bits.
func (d *decoder) getBits(n uint, what string) (uint32, error) {
	if d.nbits < n {
		if err := d.pull(); err != nil {
			return 0, err
		}
		if d.nbits < n {
			return 0, d.truncated(what)
		}
	}
	v := uint32(d.bits & (1<<n - 1))
	d.bits >>= n
	d.nbits -= n
	return v, nil
}

// alignByte drops the bits up to the next byte boundary.
func (d *decoder) alignByte() {
	k := d.nbits & 7
	d.bits >>= k
	d.nbits -= k
}

// exhausted reports whether no whole unconsumed byte of input remains.
func (d *decoder) exhausted() (bool, error) {
	if d.nbits >= 8 || d.pos < len(d.in) {
		return false, nil
	}
	err := d.readInput()
	switch {
	case err == io.EOF:
		return true, nil
	case err != nil:
		return false, fmt.Errorf("gzipx: read compressed input: %w", err)
	}
	return false, nil
}

func (d *decoder) truncated(what string) error {
	return fmt.Errorf("gzipx: input ends inside %s at compressed offset %d: %w",
		what, (d.bitPos()+7)/8, io.ErrUnexpectedEOF)
}

func (d *decoder) corrupt(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return fmt.Errorf("%w: %s at compressed offset %d", ErrCorrupt, msg, d.bitPos()/8)
}

// slide moves the last WindowSize bytes of output to the front of the
// buffer. It is only called once every byte has been handed out.
func (d *decoder) slide() {
	d.updateCRC()
	delta := d.op - WindowSize
	copy(d.out[:WindowSize], d.out[delta:d.op])
	d.op, d.rp, d.crcPos = WindowSize, WindowSize, WindowSize
	d.outBase += int64(delta)
	d.hist = max(0, d.hist-delta)
}

// updateCRC folds the output produced since the last call into the member
// checksum and size.
func (d *decoder) updateCRC() {
	if d.resume || d.crcPos >= d.op {
		d.crcPos = d.op
		return
	}
	d.crc = crc32.Update(d.crc, crc32.IEEETable, d.out[d.crcPos:d.op])
	d.memberSize += uint32(d.op - d.crcPos)
	d.crcPos = d.op
}

// fill decodes until at least want bytes (and at least minFill) are
// buffered for the caller, the buffer is full, or an error or the end of the
// input. It must only be called when every decoded byte has been handed out.
func (d *decoder) fill(want int) error {
	if d.err != nil {
		return d.err
	}
	if d.op >= outLimit {
		d.slide()
	}
	target := min(d.op+max(want, minFill), outLimit)
	for d.op < target && d.err == nil {
		d.err = d.step()
	}
	d.updateCRC()
	return d.err
}

// step advances the state machine by one stage.
func (d *decoder) step() error {
	switch d.state {
	case stHeader:
		return d.member()
	case stBlockStart:
		return d.blockHeader()
	case stStored:
		return d.stored()
	case stHuffman:
		return d.huffman()
	case stTrailer:
		return d.trailer()
	default:
		return io.EOF
	}
}

// endBlock moves on after a block's last byte or end-of-block code.
func (d *decoder) endBlock() {
	if d.final {
		d.state = stTrailer
	} else {
		d.state = stBlockStart
	}
	d.boundary(false)
}

// read hands out buffered output, decoding more when none is left.
func (d *decoder) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if d.rp == d.op {
		if err := d.fill(len(p)); err != nil && d.rp == d.op {
			return 0, err
		}
	}
	n := copy(p, d.out[d.rp:d.op])
	d.rp += n
	return n, nil
}

// isEOF reports whether err is a clean end of input.
func isEOF(err error) bool { return errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) }
