package fbs

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"
)

// sample builds a table {0: string s, 1: int64 v, 2: [string] list of n
// copies of one shared string, 3: [ubyte] blob}.
func sample(s string, v int64, shared string, n int, blob []byte) []byte {
	b := flatbuffers.NewBuilder(0)
	so := b.CreateString(s)
	sh := b.CreateString(shared)
	b.StartVector(4, n, 4)
	for range n {
		b.PrependUOffsetT(sh)
	}
	list := b.EndVector(n)
	bv := b.CreateByteVector(blob)
	b.StartObject(4)
	b.PrependUOffsetTSlot(0, so, 0)
	b.PrependInt64Slot(1, v, 0)
	b.PrependUOffsetTSlot(2, list, 0)
	b.PrependUOffsetTSlot(3, bv, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

func TestDecodeWellFormed(t *testing.T) {
	buf := sample("hello", -42, "x", 3, []byte{1, 2, 3})
	d := NewDecoder(buf)
	root := d.Root("sample")
	if got := root.String(0); got != "hello" {
		t.Errorf("string %q", got)
	}
	if got := root.Int64(1, 7); got != -42 {
		t.Errorf("int64 %d", got)
	}
	if got := root.Int64(9, 7); got != 7 {
		t.Errorf("absent field %d, want default 7", got)
	}
	list := root.Vector(2, "list")
	if list.Len() != 3 {
		t.Fatalf("vector length %d", list.Len())
	}
	for i := range list.Len() {
		if b, ok := list.StringBytes(i); !ok || string(b) != "x" {
			t.Errorf("element %d = %q, %v", i, b, ok)
		}
	}
	if b, ok := root.Bytes(3); !ok || string(b) != "\x01\x02\x03" || cap(b) != 3 {
		t.Errorf("bytes %v ok=%v cap=%d", b, ok, cap(b))
	}
	if sub := root.Table(0, "not a table"); d.Err() == nil && sub.Valid() {
		// A string read as a table may or may not parse; either way no panic.
		_ = sub.Int64(0, 0)
	}
}

func TestZeroTableReadsAbsent(t *testing.T) {
	var tb Table
	if tb.Valid() || tb.String(0) != "" || tb.Int64(0, 5) != 5 || tb.Vector(0, "v").Len() != 0 || tb.Table(0, "t").Valid() {
		t.Fatal("zero Table does not read as absent")
	}
	var v Vector
	if v.Table(0).Valid() {
		t.Fatal("zero Vector returned a table")
	}
	if _, ok := v.StringBytes(0); ok {
		t.Fatal("zero Vector returned a string")
	}
}

// TestBudget checks that shared substructures cannot make decoding cost more
// than the buffer: 10 000 references to one 1000-byte string fit in 41 KB
// but would decode to 10 MB.
func TestBudget(t *testing.T) {
	buf := sample("s", 1, strings.Repeat("a", 1000), 10000, nil)
	d := NewDecoder(buf)
	list := d.Root("sample").Vector(2, "list")
	for i := 0; i < list.Len() && d.Err() == nil; i++ {
		list.StringBytes(i)
	}
	if err := d.Err(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("error %v, want budget exceeded", err)
	}
}

// TestStickyError checks that after the first error every accessor returns
// zero values and the first error is kept.
func TestStickyError(t *testing.T) {
	buf := sample("hello", 1, "x", 1, nil)
	binary.LittleEndian.PutUint32(buf, 0xffff)
	d := NewDecoder(buf)
	root := d.Root("sample")
	first := d.Err()
	if first == nil || root.Valid() || root.String(0) != "" || root.Int64(1, 3) != 3 {
		t.Fatalf("broken root read as valid (err %v)", first)
	}
	if d.Err() != first {
		t.Fatal("first error replaced")
	}
}

// TestNeverPanics decodes every prefix and every single-byte corruption of
// a sample buffer through every accessor.
func TestNeverPanics(t *testing.T) {
	orig := sample("hello", 99, "shared", 4, []byte("blob"))
	for n := range len(orig) {
		readAll(orig[:n])
	}
	for i := range orig {
		for _, v := range []byte{0, 1, 0x7f, 0x80, 0xff} {
			b := append([]byte(nil), orig...)
			b[i] = v
			readAll(b)
		}
	}
}

// readAll reads every field as every kind, returning the error.
func readAll(buf []byte) error {
	d := NewDecoder(buf)
	root := d.Root("r")
	for slot := range 6 {
		root.String(slot)
		root.Int64(slot, 0)
		root.Int32(slot, 0)
		root.Uint32(slot, 0)
		root.Int8(slot, 0)
		root.Bytes(slot)
		v := root.Vector(slot, "v")
		for i := range v.Len() {
			v.StringBytes(i)
			v.Table(i).Int64(0, 0)
		}
		root.Table(slot, "t").String(0)
	}
	return d.Err()
}

func FuzzDecoder(f *testing.F) {
	f.Add(sample("hello", 99, "shared", 4, []byte("blob")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := readAll(b); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
	})
}
