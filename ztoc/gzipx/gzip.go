package gzipx

import (
	"fmt"
	"hash/crc32"
)

// gzip header flags (RFC 1952 §2.3.1).
const (
	flagHCRC     = 1 << 1
	flagExtra    = 1 << 2
	flagName     = 1 << 3
	flagComment  = 1 << 4
	flagReserved = 0xe0
)

// member reads a gzip member header. After the first member (and always
// when resuming) the input may instead end here, cleanly.
func (d *decoder) member() error {
	if d.members > 0 || d.resume {
		done, err := d.exhausted()
		if err != nil {
			return err
		}
		if done {
			d.state = stDone
			return nil
		}
	}
	start := d.bitPos() / 8
	h := headerReader{d: d}
	var fixed [10]byte
	for i := range fixed {
		fixed[i] = h.byte()
	}
	if h.err == nil {
		if fixed[0] != 0x1f || fixed[1] != 0x8b {
			return fmt.Errorf("%w: bad magic %#02x %#02x at offset %d", ErrHeader, fixed[0], fixed[1], start)
		}
		if fixed[2] != 8 {
			return fmt.Errorf("%w: unknown compression method %d at offset %d", ErrHeader, fixed[2], start)
		}
		if fixed[3]&flagReserved != 0 {
			return fmt.Errorf("%w: reserved flags %#02x set at offset %d", ErrHeader, fixed[3], start)
		}
	}
	flags := fixed[3]
	if flags&flagExtra != 0 {
		n := int(h.byte()) | int(h.byte())<<8
		for i := 0; i < n && h.err == nil; i++ {
			h.byte()
		}
	}
	if flags&flagName != 0 {
		h.skipString()
	}
	if flags&flagComment != 0 {
		h.skipString()
	}
	if flags&flagHCRC != 0 {
		sum := uint16(h.crc)
		got := uint16(h.byte()) | uint16(h.byte())<<8
		if h.err == nil && got != sum {
			return fmt.Errorf("%w: header CRC-16 %#04x, computed %#04x, at offset %d", ErrChecksum, got, sum, start)
		}
	}
	if h.err != nil {
		return h.err
	}
	d.members++
	d.crc, d.memberSize, d.crcPos = 0, 0, d.op
	d.hist = d.op // a member may not refer to the output of the one before
	d.state = stBlockStart
	d.boundary(true)
	return nil
}

// headerReader reads header bytes through the (byte-aligned) bit buffer,
// keeping their CRC and the first error.
type headerReader struct {
	d   *decoder
	crc uint32
	err error
}

func (h *headerReader) byte() byte {
	if h.err != nil {
		return 0
	}
	v, err := h.d.getBits(8, "gzip header")
	if err != nil {
		h.err = err
		return 0
	}
	b := byte(v)
	h.crc = crc32.Update(h.crc, crc32.IEEETable, []byte{b})
	return b
}

// skipString skips a zero-terminated header field.
func (h *headerReader) skipString() {
	for h.err == nil && h.byte() != 0 {
	}
}

// trailer reads a member's CRC-32 and ISIZE and checks them, except when
// resuming, where the start of the member was never seen.
func (d *decoder) trailer() error {
	d.alignByte()
	sum, err := d.getBits(32, "gzip trailer")
	if err != nil {
		return err
	}
	size, err := d.getBits(32, "gzip trailer")
	if err != nil {
		return err
	}
	if !d.resume {
		d.updateCRC()
		if sum != d.crc {
			return fmt.Errorf("%w: member CRC-32 %#08x, computed %#08x", ErrChecksum, sum, d.crc)
		}
		if size != d.memberSize {
			return fmt.Errorf("%w: member ISIZE %d, but %d bytes (mod 2^32) inflated", ErrChecksum, size, d.memberSize)
		}
	}
	d.state = stHeader
	return nil
}
