package gzipx

import "fmt"

// codeLenOrder is the order in which code-length code lengths are stored.
var codeLenOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// blockHeader reads a block header and sets up decoding of its body. In
// resume mode the input may end here cleanly: every span but the last ends
// at a block boundary.
func (d *decoder) blockHeader() error {
	if d.resume {
		done, err := d.exhausted()
		if err != nil {
			return err
		}
		if done {
			d.state = stDone
			return nil
		}
	}
	h, err := d.getBits(3, "block header")
	if err != nil {
		return err
	}
	d.final = h&1 == 1
	switch h >> 1 {
	case 0:
		return d.storedHeader()
	case 1:
		d.lt, d.dt = d.fixedTables()
	case 2:
		if err := d.dynamicTables(); err != nil {
			return err
		}
		d.lt, d.dt = &d.dynLit, &d.dynDist
	default:
		return d.corrupt("invalid block type 3")
	}
	d.state = stHuffman
	return nil
}

// storedHeader reads LEN and NLEN of a stored block.
func (d *decoder) storedHeader() error {
	d.alignByte()
	v, err := d.getBits(32, "stored block header")
	if err != nil {
		return err
	}
	n, nn := v&0xffff, v>>16
	if n != ^nn&0xffff {
		return d.corrupt("stored block length %#04x does not match its complement %#04x", n, nn)
	}
	d.storedLeft = int(n)
	d.state = stStored
	if n == 0 {
		d.endBlock()
	}
	return nil
}

// stored copies stored-block bytes, first those already in the bit buffer
// (always whole bytes here), then straight from the input buffer.
func (d *decoder) stored() error {
	for d.storedLeft > 0 && d.op < outLimit {
		if d.nbits >= 8 {
			d.out[d.op] = byte(d.bits)
			d.op++
			d.bits >>= 8
			d.nbits -= 8
			d.storedLeft--
			continue
		}
		// The bit buffer is empty; bits above nbits may hold a copy of
		// in[pos] from a word refill, which must not be OR-ed in again later.
		d.bits = 0
		if d.pos >= len(d.in) {
			if err := d.readInput(); err != nil {
				if isEOF(err) {
					return d.truncated("stored block")
				}
				return fmt.Errorf("gzipx: read compressed input: %w", err)
			}
			continue
		}
		n := copy(d.out[d.op:min(d.op+d.storedLeft, outLimit)], d.in[d.pos:])
		d.op += n
		d.pos += n
		d.storedLeft -= n
	}
	if d.storedLeft == 0 {
		d.endBlock()
	}
	return nil
}

// dynamicTables reads the code description of a dynamic block and builds
// its literal/length and distance tables.
func (d *decoder) dynamicTables() error {
	v, err := d.getBits(14, "dynamic block header")
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlit > 286 || ndist > 30 {
		return d.corrupt("too many length (%d) or distance (%d) symbols", nlit, ndist)
	}
	var clens [19]uint8
	for i := range nclen {
		l, err := d.getBits(3, "code length code lengths")
		if err != nil {
			return err
		}
		clens[codeLenOrder[i]] = uint8(l)
	}
	var ctab [1 << codeRoot]uint32
	if err := buildTable(ctab[:], clens[:], codeRoot, kindCodeLen); err != nil {
		return d.corrupt("code length code: %v", err)
	}
	lens := d.lens[:nlit+ndist]
	if err := d.readCodeLengths(lens, &ctab); err != nil {
		return err
	}
	if lens[256] == 0 {
		return d.corrupt("missing end-of-block code")
	}
	if err := buildTable(d.dynLit[:], lens[:nlit], litRoot, kindLitLen); err != nil {
		return d.corrupt("literal/length code: %v", err)
	}
	if err := buildTable(d.dynDist[:], lens[nlit:], distRoot, kindDist); err != nil {
		return d.corrupt("distance code: %v", err)
	}
	return nil
}

// readCodeLengths decodes the run-length coded code lengths of both codes.
func (d *decoder) readCodeLengths(lens []uint8, ctab *[1 << codeRoot]uint32) error {
	for i := 0; i < len(lens); {
		if d.nbits < 7+7 {
			if err := d.pull(); err != nil {
				return err
			}
		}
		e := ctab[d.bits&(1<<codeRoot-1)]
		n := uint(e & 15)
		if n == 0 || n > d.nbits {
			if n > d.nbits {
				return d.truncated("code lengths")
			}
			return d.corrupt("invalid code length code")
		}
		d.bits >>= n
		d.nbits -= n
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep, val uint32
		var err error
		switch sym {
		case 16:
			if i == 0 {
				return d.corrupt("repeat of a code length with none before")
			}
			val = uint32(lens[i-1])
			rep, err = d.getBits(2, "code lengths")
			rep += 3
		case 17:
			rep, err = d.getBits(3, "code lengths")
			rep += 3
		default:
			rep, err = d.getBits(7, "code lengths")
			rep += 11
		}
		if err != nil {
			return err
		}
		if i+int(rep) > len(lens) {
			return d.corrupt("code length repeat runs past the end")
		}
		for range rep {
			lens[i] = uint8(val)
			i++
		}
	}
	return nil
}
