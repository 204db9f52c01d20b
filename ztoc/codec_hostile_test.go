package ztoc

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/ociseek/ociseek/ztoc/fbs"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestUnmarshalTruncated feeds every prefix of a small fixture and every
// 997th prefix of the others: each must be refused with ErrInvalid.
func TestUnmarshalTruncated(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		b := f.Ztoc(t)
		step := 1
		if len(b) > 10000 {
			step = 997
		}
		for n := 0; n < len(b); n += step {
			if _, err := Unmarshal(b[:n:n]); err == nil {
				t.Fatalf("%s: prefix of %d bytes accepted", f.Name, n)
			} else {
				mustInvalid(t, err)
			}
		}
	}
}

// TestUnmarshalBitFlips flips random bits in each fixture. A flipped buffer
// may still be valid (a flipped mode bit is); whatever is accepted must
// re-encode and decode to the same document.
func TestUnmarshalBitFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, f := range ztoctest.Fixtures(t) {
		orig := f.Ztoc(t)
		rounds := 300
		if len(orig) > 100000 {
			rounds = 40 // big buffers: each round decodes ~1 MB
		}
		for range rounds {
			b := append([]byte(nil), orig...)
			for range 1 + rng.IntN(4) {
				// Half the flips land in the first 4 KiB, where the tables
				// and vtables of the root and of the last entries are.
				i := rng.IntN(len(b))
				if rng.IntN(2) == 0 {
					i = rng.IntN(min(len(b), 4096))
				}
				b[i] ^= 1 << rng.IntN(8)
			}
			checkDecodeRoundTrip(t, b)
		}
	}
}

// checkDecodeRoundTrip asserts the codec's contract for arbitrary bytes:
// an error wrapping ErrInvalid, or a model that Marshal accepts and whose
// encoding decodes to the same document.
func checkDecodeRoundTrip(t *testing.T, b []byte) {
	t.Helper()
	z, err := Unmarshal(b)
	if err != nil {
		mustInvalid(t, err)
		return
	}
	out, err := Marshal(z)
	if err != nil {
		t.Fatalf("accepted buffer does not re-encode: %v", err)
	}
	z2, err := Unmarshal(out)
	if err != nil {
		t.Fatalf("re-encoded buffer refused: %v", err)
	}
	if a, b := jsonText(z.Info(nil)), jsonText(z2.Info(nil)); a != b {
		t.Fatalf("round trip changed the document:\n%s\n%s", a, b)
	}
}

// walker finds fields in a well-formed buffer so tests can corrupt them.
type walker []byte

func (w walker) u32(p int) int { return int(binary.LittleEndian.Uint32(w[p:])) }

// field returns the position of a table's field, or -1 when absent.
func (w walker) field(table, slot int) int {
	vt := table - int(int32(binary.LittleEndian.Uint32(w[table:])))
	voff := 4 + 2*slot
	if voff >= int(binary.LittleEndian.Uint16(w[vt:])) {
		return -1
	}
	fo := int(binary.LittleEndian.Uint16(w[vt+voff:]))
	if fo == 0 {
		return -1
	}
	return table + fo
}

// deref follows the offset at p.
func (w walker) deref(p int) int { return p + w.u32(p) }

func (w walker) root() int { return w.u32(0) }

// TestUnmarshalCorrupted corrupts specific offsets, lengths and enum values
// of a real zTOC: each must be refused with ErrInvalid, without panicking
// or allocating from the corrupted count.
func TestUnmarshalCorrupted(t *testing.T) {
	orig := ztoctest.Lookup(t, "plain.tar").Ztoc(t)
	w := walker(orig)
	root := w.root()
	toc := w.deref(w.field(root, fbs.ZtocTOC))
	meta := w.deref(w.field(toc, fbs.TOCMetadata))
	entry0 := w.deref(meta + 4)
	name0 := w.deref(w.field(entry0, fbs.FileMetadataName))
	ci := w.deref(w.field(root, fbs.ZtocCompressionInfo))
	digests := w.deref(w.field(ci, fbs.CompressionInfoSpanDigests))
	cps := w.deref(w.field(ci, fbs.CompressionInfoCheckpoints))
	alg := w.field(ci, fbs.CompressionInfoCompressionAlgorithm)
	vt := root - int(int32(binary.LittleEndian.Uint32(orig[root:])))

	put32 := func(p int, v uint32) func(b []byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[p:], v) }
	}
	put16 := func(p int, v uint16) func(b []byte) {
		return func(b []byte) { binary.LittleEndian.PutUint16(b[p:], v) }
	}
	cases := map[string]func(b []byte){
		"RootOffsetPastEnd":     put32(0, uint32(len(orig))),
		"RootOffsetZero":        put32(0, 0),
		"RootOffsetHuge":        put32(0, 0xfffffff0),
		"VtableBeforeBuffer":    put32(root, 0x7fffffff),
		"VtableNegativeSoffset": put32(root, 0x80000000),
		"VtablePastEnd":         put32(root, uint32(int32(root-len(orig)))),
		"VtableOddSize":         put16(vt, 7),
		"VtableSizeTooSmall":    put16(vt, 2),
		"VtableSizePastEnd":     put16(vt, 0xfffe),
		"TableSizePastEnd":      put16(vt+2, 0xffff),
		"FieldOutsideTable":     put16(vt+4+2*fbs.ZtocCompressionInfo, 0xfff0),
		"TOCOffsetPastEnd":      put32(w.field(root, fbs.ZtocTOC), uint32(len(orig))),
		"HugeTOCVector":         put32(meta, 0xffffffff),
		"TOCVectorTooLong":      put32(meta, uint32(len(orig)/4)),
		"HugeNameLength":        put32(name0, 0xffffffff),
		"NameLengthPastEnd":     put32(name0, uint32(len(orig)-name0-4)),
		"NameWithoutNUL":        func(b []byte) { b[name0+4+w.u32(name0)] = 'x' },
		"HugeDigestVector":      put32(digests, 0x40000000),
		"HugeCheckpointsBlob":   put32(cps, 0xfffffff0),
		"TarZinfoTruncated":     put32(cps, 3),
		"UnknownAlgorithm":      func(b []byte) { b[alg] = 3 },
		"EntryIsSelfVtable":     put32(meta+4, 0),
		// Point every TOC entry at the first: a DAG instead of a tree. The
		// repeated entry overlaps itself (and fbs's decode budget bounds
		// the cost of such sharing; see its tests).
		"SharedEntries": func(b []byte) {
			n := w.u32(meta)
			for i := 1; i < n; i++ {
				binary.LittleEndian.PutUint32(b[meta+4+4*i:], uint32(entry0-(meta+4+4*i)))
			}
		},
	}
	if alg < 0 {
		t.Fatal("plain.tar zTOC lacks the compression_algorithm field")
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			corrupt(b)
			_, err := Unmarshal(b)
			mustInvalid(t, err)
		})
	}
}

func TestUnmarshalTooLarge(t *testing.T) {
	b := ztoctest.Lookup(t, "plain.tar").Ztoc(t)
	_, err := unmarshalLimit(b, len(b)-1)
	mustInvalid(t, err)
	if _, err := unmarshalLimit(b, len(b)); err != nil {
		t.Fatal(err)
	}
}
