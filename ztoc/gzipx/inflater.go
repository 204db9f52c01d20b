package gzipx

import "io"

// Inflater decompresses a whole gzip file, all of its concatenated members,
// as an io.Reader, and reports every deflate block boundary as it passes.
//
// Each member's header is validated (including its CRC-16 when present) and
// its CRC-32 and ISIZE trailer checked; a mismatch is an error wrapping
// ErrChecksum. Input that ends early gives an error wrapping
// io.ErrUnexpectedEOF; invalid deflate data one wrapping ErrCorrupt. After a
// member, the input must end or hold another gzip member.
type Inflater struct {
	d decoder
}

// NewInflater returns an Inflater reading the gzip file from r. It reads r
// in chunks of 64 KiB as it needs them.
func NewInflater(r io.Reader) *Inflater {
	z := &Inflater{}
	z.d.init(r, false)
	return z
}

// SetBoundaryFunc sets the function called at every block boundary: right
// after each member header and at the end of every block (including the last
// one of a member, flagged LastBlock). It is called synchronously from Read,
// before any byte past the boundary is returned, with Out equal to the
// number of bytes inflated up to the boundary. Window may be called from f;
// Read may not.
func (z *Inflater) SetBoundaryFunc(f func(b Boundary)) {
	z.d.onBoundary = f
}

// Read reads uncompressed bytes. It returns io.EOF after the last member's
// trailer has been checked and the input has ended.
func (z *Inflater) Read(p []byte) (int, error) {
	return z.d.read(p)
}

// Window returns the WindowSize bytes of output preceding the current
// boundary, oldest first, zero-filled at the front when fewer exist. The
// window runs on across member boundaries: it is the uncompressed stream's
// bytes, as the reference tooling stores them. It is only meaningful inside
// the boundary callback. The bytes are copied into dst when it has the
// capacity, else into a new slice.
func (z *Inflater) Window(dst []byte) []byte {
	if cap(dst) < WindowSize {
		dst = make([]byte, WindowSize)
	}
	dst = dst[:WindowSize]
	d := &z.d
	copy(dst, d.out[d.op-WindowSize:d.op])
	return dst
}
