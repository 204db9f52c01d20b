package gzipx

import "encoding/binary"

// Outcomes of the fast loop.
const (
	fastNeedInput = iota // fewer than 8 input bytes buffered, or output full
	fastEOB              // end-of-block code consumed
	fastBadLit           // invalid literal/length code
	fastBadDist          // invalid distance code
	fastFar              // distance reaches before the available history
)

// huffman decodes symbols of a fixed or dynamic block until the block ends
// or the output buffer is full. The fast loop does the bulk; near the end of
// the buffered input, symbols are decoded one at a time with every bit
// accounted for, reading more input as needed.
func (d *decoder) huffman() error {
	for d.op < outLimit {
		switch d.fast() {
		case fastEOB:
			d.endBlock()
			return nil
		case fastBadLit:
			return d.corrupt("invalid literal/length code")
		case fastBadDist:
			return d.corrupt("invalid distance code")
		case fastFar:
			return d.corrupt("distance too far back")
		}
		if d.op >= outLimit {
			return nil
		}
		eob, err := d.slowSymbol()
		if err != nil || eob {
			return err
		}
	}
	return nil
}

// fast decodes symbols while at least 8 input bytes are buffered, so that
// one 64-bit load before each symbol tops the bit buffer up to at least 56
// bits: enough for the longest length code, its extra bits, the longest
// distance code and its extra bits (15+5+15+13 = 48). It is one long
// function on purpose: it is the hot loop, and its state lives in registers.
func (d *decoder) fast() int {
	// As an array, out's length is a constant: with op < outLimit from the
	// loop condition the compiler drops bounds checks of literal stores.
	in, out := d.in, (*[outSize]byte)(d.out)
	bits, nbits, pos, op := d.bits, d.nbits, d.pos, d.op
	lt, dt := d.lt, d.dt
	hist := d.hist
	res := fastNeedInput
	for pos <= len(in)-8 && op < outLimit {
		bits |= binary.LittleEndian.Uint64(in[pos:]) << (nbits & 63)
		pos += int((63 - nbits) >> 3)
		nbits |= 56

		e := lt[bits&litMask]
		if e&eSub != 0 {
			e = lt[(e>>16+uint32(bits>>litRoot)&(1<<(e&15)-1))&(litTableSize-1)]
		}
		if e&eLit != 0 {
			bits >>= e & 15
			nbits -= uint(e & 15)
			out[op] = byte(e >> 16)
			op++
			// A second literal fits in the bits left (56-15 ≥ 15).
			e = lt[bits&litMask]
			if e&eSub != 0 {
				e = lt[(e>>16+uint32(bits>>litRoot)&(1<<(e&15)-1))&(litTableSize-1)]
			}
			if e&eLit != 0 {
				bits >>= e & 15
				nbits -= uint(e & 15)
				out[op] = byte(e >> 16)
				op++
			}
			continue
		}
		if e&eLen == 0 {
			if e&eEOB != 0 {
				bits >>= e & 15
				nbits -= uint(e & 15)
				res = fastEOB
			} else {
				res = fastBadLit
			}
			break
		}
		bits >>= e & 15
		nbits -= uint(e & 15)
		x := (e >> 4) & 15
		length := int(e>>16) + int(bits&(1<<x-1))
		bits >>= x
		nbits -= uint(x)

		e = dt[bits&distMask]
		if e&eSub != 0 {
			e = dt[(e>>16+uint32(bits>>distRoot)&(1<<(e&15)-1))&(distTableSize-1)]
		}
		if e&eBad != 0 {
			res = fastBadDist
			break
		}
		bits >>= e & 15
		nbits -= uint(e & 15)
		x = (e >> 4) & 15
		dist := int(e>>16) + int(bits&(1<<x-1))
		bits >>= x
		nbits -= uint(x)
		if dist > op-hist {
			res = fastFar
			break
		}
		if dist >= 8 && length <= 16 {
			// The most common match, copied inline in two words.
			src := op - dist
			binary.LittleEndian.PutUint64(out[op:], binary.LittleEndian.Uint64(out[src:]))
			binary.LittleEndian.PutUint64(out[op+8:], binary.LittleEndian.Uint64(out[src+8:]))
		} else {
			copyMatch(out[:], op, dist, length)
		}
		op += length
	}
	d.bits, d.nbits, d.pos, d.op = bits, nbits, pos, op
	return res
}

// copyMatch copies length bytes from dist bytes back to out[op:]. It may
// write up to 7 bytes past op+length, which the buffer's slack absorbs and
// later output overwrites.
func copyMatch(out []byte, op, dist, length int) {
	src := op - dist
	switch {
	case dist >= 8:
		if dist >= length && length > 64 {
			copy(out[op:op+length], out[src:src+length])
			return
		}
		// Each 8-byte load reads only bytes already written: dist ≥ 8.
		for n := 0; n < length; n += 8 {
			binary.LittleEndian.PutUint64(out[op+n:], binary.LittleEndian.Uint64(out[src+n:]))
		}
	case dist == 1:
		v := uint64(out[src]) * 0x0101010101010101
		for n := 0; n < length; n += 8 {
			binary.LittleEndian.PutUint64(out[op+n:], v)
		}
	default:
		// Short period: lay down one period by bytes until a whole
		// multiple of it spans 8 bytes, then copy words at that distance.
		step := dist * ((8 + dist - 1) / dist)
		end := min(step, length)
		for i := range end {
			out[op+i] = out[src+i]
		}
		for n := end; n < length; n += 8 {
			binary.LittleEndian.PutUint64(out[op+n:], binary.LittleEndian.Uint64(out[op+n-step:]))
		}
	}
}

// slowSymbol decodes one symbol, checking that every bit it uses is there.
func (d *decoder) slowSymbol() (eob bool, err error) {
	if err := d.pull(); err != nil {
		return false, err
	}
	e := d.lt[d.bits&litMask]
	if e&eSub != 0 {
		e = d.lt[(e>>16+uint32(d.bits>>litRoot)&(1<<(e&15)-1))&(litTableSize-1)]
	}
	n := uint(e & 15)
	if n > d.nbits || (n == 0 && d.nbits < litRoot) {
		return false, d.truncated("literal/length code")
	}
	if e&eBad != 0 {
		return false, d.corrupt("invalid literal/length code")
	}
	d.bits >>= n
	d.nbits -= n
	switch {
	case e&eLit != 0:
		d.out[d.op] = byte(e >> 16)
		d.op++
		return false, nil
	case e&eEOB != 0:
		d.endBlock()
		return true, nil
	}
	x, err := d.getBits(uint(e>>4&15), "length extra bits")
	if err != nil {
		return false, err
	}
	length := int(e>>16) + int(x)
	e = d.dt[d.bits&distMask]
	if e&eSub != 0 {
		e = d.dt[(e>>16+uint32(d.bits>>distRoot)&(1<<(e&15)-1))&(distTableSize-1)]
	}
	n = uint(e & 15)
	if n > d.nbits || (n == 0 && d.nbits < distRoot) {
		return false, d.truncated("distance code")
	}
	if e&eBad != 0 {
		return false, d.corrupt("invalid distance code")
	}
	d.bits >>= n
	d.nbits -= n
	x, err = d.getBits(uint(e>>4&15), "distance extra bits")
	if err != nil {
		return false, err
	}
	dist := int(e>>16) + int(x)
	if dist > d.op-d.hist {
		return false, d.corrupt("distance too far back")
	}
	copyMatch(d.out, d.op, dist, length)
	d.op += length
	return false, nil
}
