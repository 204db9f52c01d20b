package gzipx

import (
	"fmt"
	"math/bits"
)

// Decoding tables are two-level, indexed by the next input bits (deflate
// codes are packed LSB first, so a table index is the bit-reversed code). A
// root table of 2^root entries resolves every code of up to root bits in one
// load; a longer code's root entry points at a subtable indexed by the bits
// after the root bits.
//
// An entry is a uint32:
//
//	bits  0-3   n: bits to consume for this code (for a subtable pointer:
//	            the subtable's index width)
//	bits  4-7   number of extra bits that follow the code (lengths, distances)
//	bits  8-12  kind flags (eLit, eLen, eEOB, eSub, eBad; distances have none)
//	bits 16-31  value: literal byte, base length, base distance, code-length
//	            symbol, or subtable start
const (
	eLit = 1 << 8
	eLen = 1 << 9
	eEOB = 1 << 10
	eSub = 1 << 11
	eBad = 1 << 12
)

// Table sizes. The worst-case sizes of a complete code with 286 (30)
// symbols, 15-bit codes and a 10-bit (8-bit) root are 1332 (402) entries
// (zlib's ENOUGH figures); the arrays are rounded up to powers of two so
// that masked indices need no bounds checks.
const (
	litRoot       = 10
	litMask       = 1<<litRoot - 1
	litTableSize  = 2048
	distRoot      = 8
	distMask      = 1<<distRoot - 1
	distTableSize = 512
	codeRoot      = 7 // code-length codes are at most 7 bits long
	maxLitSyms    = 288
	maxDistSyms   = 32
	maxCodeLen    = 15
)

// Kinds of code a table is built for; they decide entry contents and which
// incomplete codes are acceptable.
const (
	kindLitLen = iota
	kindDist
	kindCodeLen
)

// Base values and extra-bit counts of length symbols 257..285 and distance
// symbols 0..29 (RFC 1951 §3.2.5).
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// symbolEntry is the table entry of sym without its code length.
func symbolEntry(kind, sym int) uint32 {
	switch kind {
	case kindLitLen:
		switch {
		case sym < 256:
			return eLit | uint32(sym)<<16
		case sym == 256:
			return eEOB
		case sym < 286:
			i := sym - 257
			return eLen | uint32(lengthExtra[i])<<4 | uint32(lengthBase[i])<<16
		}
		return eBad // 286 and 287 take part in the fixed code but are invalid
	case kindDist:
		if sym < 30 {
			return uint32(distExtra[sym])<<4 | uint32(distBase[sym])<<16
		}
		return eBad
	}
	return uint32(sym) << 16
}

// buildTable fills table with the decoding table of the canonical code with
// the given code lengths. It rejects over-subscribed codes and, like zlib,
// incomplete ones except a lone one-bit code (and, for distances, no code at
// all: a block may hold only literals).
func buildTable(table []uint32, lens []uint8, root uint, kind int) error {
	var count [maxCodeLen + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	longest := maxCodeLen
	for longest > 0 && count[longest] == 0 {
		longest--
	}
	left := 1
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return fmt.Errorf("over-subscribed code")
		}
	}
	if left > 0 {
		okEmpty := kind == kindDist && longest == 0
		okSingle := kind != kindCodeLen && longest == 1
		if !okEmpty && !okSingle {
			return fmt.Errorf("incomplete code")
		}
		for i := range table[:1<<root] {
			table[i] = eBad
		}
	}
	var next [maxCodeLen + 2]int
	code := 0
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	if uint(longest) > root {
		if err := allocSubtables(table, lens, root, next); err != nil {
			return err
		}
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		r := int(bits.Reverse16(uint16(c)) >> (16 - l))
		ent := symbolEntry(kind, sym) | uint32(l)
		if uint(l) <= root {
			for i := r; i < 1<<root; i += 1 << l {
				table[i] = ent
			}
			continue
		}
		sub := table[r&(1<<root-1)]
		start, width := int(sub>>16), sub&15
		for i := r >> root; i < 1<<width; i += 1 << (uint(l) - root) {
			table[start+i] = ent
		}
	}
	return nil
}

// allocSubtables writes the root entries that point at subtables. Each
// subtable is as wide as the longest code sharing its root prefix needs.
func allocSubtables(table []uint32, lens []uint8, root uint, next [maxCodeLen + 2]int) error {
	var width [1 << litRoot]uint8
	for _, l := range lens {
		if uint(l) <= root {
			continue
		}
		p := next[l] >> (uint(l) - root)
		next[l]++
		width[p] = max(width[p], l-uint8(root))
	}
	off := 1 << root
	for p, w := range width[:1<<root] {
		if w == 0 {
			continue
		}
		if off+1<<w > len(table) {
			return fmt.Errorf("code tables too large")
		}
		r := int(bits.Reverse16(uint16(p)) >> (16 - root))
		table[r] = eSub | uint32(off)<<16 | uint32(w)
		off += 1 << w
	}
	return nil
}

// fixedTables returns the tables of the fixed Huffman code (RFC 1951
// §3.2.6), building them on first use.
func (d *decoder) fixedTables() (*[litTableSize]uint32, *[distTableSize]uint32) {
	if d.fixLit == nil {
		var lens [maxLitSyms]uint8
		for i := range lens {
			switch {
			case i < 144:
				lens[i] = 8
			case i < 256:
				lens[i] = 9
			case i < 280:
				lens[i] = 7
			default:
				lens[i] = 8
			}
		}
		lit := new([litTableSize]uint32)
		dist := new([distTableSize]uint32)
		var dl [maxDistSyms]uint8
		for i := range dl {
			dl[i] = 5
		}
		// Both codes are complete, so building cannot fail.
		_ = buildTable(lit[:], lens[:], litRoot, kindLitLen)
		_ = buildTable(dist[:], dl[:], distRoot, kindDist)
		d.fixLit, d.fixDist = lit, dist
	}
	return d.fixLit, d.fixDist
}
