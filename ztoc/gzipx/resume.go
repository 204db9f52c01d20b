package gzipx

import (
	"fmt"
	"io"
)

// resumeReader inflates from a checkpoint; see NewResumeReader.
type resumeReader struct {
	d       decoder
	bits    uint8
	started bool
}

// NewResumeReader inflates starting at a checkpoint. compressed starts at
// the span's first byte: if bits > 0, that byte is byte In-1 of the file and
// only its top bits bits are unconsumed; the following bytes come after it.
// window is the preset dictionary, normally the checkpoint's WindowSize
// bytes (a shorter one is taken as the most recent output).
//
// The stream is raw deflate positioned at a block header. At the end of a
// member's final block the 8-byte trailer is skipped unchecked (the member's
// start was never seen) and the next gzip header is parsed. The reader
// returns uncompressed bytes until the compressed input ends: cleanly (io.EOF)
// at a block boundary or after a trailer, otherwise with an error wrapping
// io.ErrUnexpectedEOF. It reads compressed only as fast as output is
// requested, 64 KiB at a time.
func NewResumeReader(compressed io.Reader, bits uint8, window []byte) (io.Reader, error) {
	if bits > 7 {
		return nil, fmt.Errorf("gzipx: resume with %d unused bits, want 0..7", bits)
	}
	if len(window) > WindowSize {
		return nil, fmt.Errorf("gzipx: resume window of %d bytes exceeds %d", len(window), WindowSize)
	}
	r := &resumeReader{bits: bits}
	d := &r.d
	d.init(compressed, true)
	d.hist = WindowSize - len(window)
	copy(d.out[d.hist:WindowSize], window)
	d.state = stBlockStart
	return r, nil
}

// Read reads uncompressed bytes.
func (r *resumeReader) Read(p []byte) (int, error) {
	if !r.started {
		r.started = true
		if err := r.prime(); err != nil {
			r.d.err = err
			return 0, err
		}
	}
	return r.d.read(p)
}

// prime loads the unused top bits of the first byte into the bit buffer.
func (r *resumeReader) prime() error {
	if r.bits == 0 {
		return nil
	}
	d := &r.d
	if err := d.readInput(); err != nil {
		if err == io.EOF {
			return fmt.Errorf("gzipx: resume input is empty but %d bits are due from its first byte: %w",
				r.bits, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("gzipx: read compressed input: %w", err)
	}
	d.bits = uint64(d.in[0] >> (8 - r.bits))
	d.nbits = uint(r.bits)
	d.pos = 1
	return nil
}
