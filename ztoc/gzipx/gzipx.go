// Package gzipx is a pure-Go gzip (RFC 1952) and deflate (RFC 1951)
// inflater that can stop at and resume from deflate block boundaries.
//
// The standard library's compress/flate hides both the block boundaries and
// the bit position inside the compressed stream, and it cannot be primed with
// the unused bits of a partly consumed byte. A zTOC needs all three: the
// builder records, at chosen block boundaries, the compressed offset, the
// number of unused bits in the previous byte and the 32 KiB of output before
// the boundary; a reader later restarts inflation from such a checkpoint with
// only the compressed bytes of one span in hand.
//
// Two entry points cover those uses:
//   - Inflater decompresses a whole gzip file (all concatenated members),
//     verifying every member's CRC-32 and ISIZE, and reports each block
//     boundary to a callback that may copy the window preceding it.
//   - NewResumeReader inflates from a checkpoint: raw deflate primed with the
//     checkpoint's bits and window, crossing member boundaries as needed, until
//     its compressed input ends.
//
// Boundary positions follow zlib's inflate with Z_BLOCK, which is what the AWS
// SOCI tooling uses to place checkpoints, so that zTOCs built with this
// package match the reference byte for byte.
//
// Hazards: input is hostile. Every code table is validated before use, every
// distance is checked against the history that exists, and truncated input
// yields an error wrapping io.ErrUnexpectedEOF, never a hang or a panic.
package gzipx

import "errors"

// WindowSize is the size of the deflate history window: the number of bytes
// of preceding output a checkpoint stores and a resume needs.
const WindowSize = 32 << 10

// ErrCorrupt reports compressed data that is not valid deflate data.
var ErrCorrupt = errors.New("gzipx: corrupt deflate data")

// ErrHeader reports bytes where a gzip member header should be that are not
// a valid gzip header.
var ErrHeader = errors.New("gzipx: invalid gzip header")

// ErrChecksum reports a gzip member whose CRC-32 or ISIZE trailer, or header
// CRC-16, does not match the data.
var ErrChecksum = errors.New("gzipx: checksum mismatch")

// Boundary is a deflate block boundary inside a gzip stream.
type Boundary struct {
	// In is the compressed offset (from the start of the whole gzip file) of
	// the first byte not yet fully consumed.
	In int64
	// Out is the uncompressed offset (cumulative over members).
	Out int64
	// Bits is the number of unconsumed bits left in byte In-1 (0..7): they
	// are its top Bits bits (zlib's data_type & 7).
	Bits uint8
	// AfterHeader is true for the boundary right after a gzip member header
	// (before its first block).
	AfterHeader bool
	// LastBlock is true when the block that just ended was the final block
	// of its member (zlib's "last" flag); no checkpoint can be made there
	// because what follows is the member trailer, not a block header.
	LastBlock bool
}
