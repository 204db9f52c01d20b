package gzipx

import (
	"bytes"
	"io"
	"testing"
)

// TestBuildTableRules checks which codes are accepted, as zlib decides.
func TestBuildTableRules(t *testing.T) {
	lens := func(ls ...uint8) []uint8 { return ls }
	cases := []struct {
		name string
		kind int
		lens []uint8
		ok   bool
	}{
		{"complete", kindLitLen, lens(1, 2, 3, 3), true},
		{"over-subscribed", kindLitLen, lens(1, 1, 1), false},
		{"incomplete", kindLitLen, lens(1, 2, 0, 3), false},
		{"single one-bit literal code", kindLitLen, lens(0, 1), true},
		{"single one-bit distance code", kindDist, lens(0, 0, 1), true},
		{"single two-bit distance code", kindDist, lens(0, 2), false},
		{"no distance code", kindDist, lens(0, 0, 0), true},
		{"single code-length code", kindCodeLen, lens(1), false},
		{"no code-length code", kindCodeLen, lens(0, 0), false},
	}
	for _, c := range cases {
		var table [litTableSize]uint32
		err := buildTable(table[:], c.lens, litRoot, c.kind)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// TestLongCodes builds a code with 15-bit codes (subtables in use) and
// checks every symbol decodes to itself.
func TestLongCodes(t *testing.T) {
	// Lengths 1, 2, ..., 14, 15, 15: a complete code.
	var ls [maxLitSyms]uint8
	for i := range 15 {
		ls[i] = uint8(i + 1)
	}
	ls[15] = 15
	var table [litTableSize]uint32
	if err := buildTable(table[:], ls[:16], litRoot, kindLitLen); err != nil {
		t.Fatal(err)
	}
	code := 0
	for sym := range 16 {
		l := int(ls[sym])
		if sym > 0 {
			code = (code + 1) << (l - int(ls[sym-1]))
		}
		var w bitWriter
		w.code(uint32(code), uint(l))
		w.bits(0, 16)
		v := uint64(0)
		for i, b := range w.bytes() {
			v |= uint64(b) << (8 * i)
		}
		e := table[v&litMask]
		if e&eSub != 0 {
			e = table[e>>16+uint32(v>>litRoot)&(1<<(e&15)-1)]
		}
		if e&eLit == 0 || int(e>>16) != sym || int(e&15) != l {
			t.Fatalf("symbol %d (code %b/%d) decodes to entry %#x", sym, code, l, e)
		}
	}
}

// TestDistanceTooFar: a match before the start of the stream is an error.
func TestDistanceTooFar(t *testing.T) {
	var w bitWriter
	w.bits(1, 1)
	w.bits(1, 2)
	w.code(0x30+0x61, 8) // literal 'a'
	w.code(0b0000001, 7) // length 3
	w.code(0b00001, 5)   // distance 2: one byte too far
	w.code(0, 7)
	z := append(gzipHeader(0, nil, nil, nil, false), w.bytes()...)
	z = append(z, make([]byte, 8)...)
	_, err := io.ReadAll(NewInflater(bytes.NewReader(z)))
	if !errorIs(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	// The same match is fine with a resume window.
	r, _ := NewResumeReader(bytes.NewReader(w.bytes()), 0, []byte("xyz"))
	got, err := io.ReadAll(r)
	if err == nil || string(got) != "azaz" {
		t.Fatalf("resume: %q, %v; want \"azaz\" then a truncated trailer", got, err)
	}
}

func TestInvalidBlocks(t *testing.T) {
	for name, build := range map[string]func(w *bitWriter){
		"block type 3": func(w *bitWriter) { w.bits(7, 3) },
		"stored length complement": func(w *bitWriter) {
			w.bits(1, 3)
			w.bits(0x1234, 16)
			w.bits(0x1234, 16)
		},
		"too many length codes": func(w *bitWriter) {
			w.bits(5, 3)
			w.bits(30, 5)
			w.bits(0, 5)
			w.bits(0, 4)
		},
		"fixed code 286": func(w *bitWriter) {
			w.bits(3, 3)
			w.code(0b11000110, 8)
		},
	} {
		var w bitWriter
		build(&w)
		w.bits(0, 32)
		r, _ := NewResumeReader(bytes.NewReader(w.bytes()), 0, nil)
		if _, err := io.ReadAll(r); !errorIs(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}
