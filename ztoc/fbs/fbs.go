// Package fbs reads and describes the FlatBuffers schemas of the zTOC: the
// field slots of each table (schema.go) and a decoder that checks every
// offset and length against the buffer before using it (this file).
//
// Why not the generated accessors: the google/flatbuffers Go runtime does
// no bounds checking, so reading a hostile buffer with it panics, and
// recovering from panics is not validation. Encoding is not hazardous and
// uses flatbuffers.Builder directly (package ztoc).
//
// The Decoder keeps the first error it meets (sticky, like bufio.Scanner):
// after an error every accessor returns zero values, so a caller can read a
// whole table and check Err once. Every error wraps ErrMalformed.
//
// Hazards handled here: offsets pointing outside the buffer or backwards,
// vtables outside the buffer or of odd size, fields outside their table,
// vector counts larger than the bytes that could hold them, strings without
// their NUL terminator, and shared substructures that would make decoding
// cost far more than the buffer's size (bounded by a budget equal to the
// buffer length: a buffer the reference builder wrote never exceeds it,
// because it shares nothing but vtables).
package fbs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed reports a buffer that is not a well-formed FlatBuffer for the
// expected schema.
var ErrMalformed = errors.New("malformed flatbuffer")

const (
	sizeUOffset = 4
	sizeVOffset = 2
	maxOffset   = 1<<31 - 1
)

// Decoder reads tables out of one buffer. The buffer must not change while
// decoded values that alias it (Bytes) are in use.
type Decoder struct {
	buf    []byte
	budget int64
	err    error
}

// NewDecoder returns a decoder over buf. Buffers of 2 GiB or more are
// refused (Err reports it) since FlatBuffers offsets are 32-bit signed.
func NewDecoder(buf []byte) *Decoder {
	d := &Decoder{buf: buf, budget: int64(len(buf))}
	if int64(len(buf)) > maxOffset {
		d.fail("buffer of %d bytes is too large", len(buf))
	}
	return d
}

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

func (d *Decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

// spend charges n decoded bytes against the budget.
func (d *Decoder) spend(n int64, what string) bool {
	if d.budget < n {
		d.fail("%s: decoded data exceeds the buffer's size (shared or overlapping objects)", what)
		d.budget = 0
		return false
	}
	d.budget -= n
	return true
}

// has reports whether [pos, pos+n) lies inside the buffer.
func (d *Decoder) has(pos, n uint64) bool {
	return pos <= uint64(len(d.buf)) && n <= uint64(len(d.buf))-pos
}

func (d *Decoder) u16(pos uint64) uint16 { return binary.LittleEndian.Uint16(d.buf[pos:]) }
func (d *Decoder) u32(pos uint64) uint32 { return binary.LittleEndian.Uint32(d.buf[pos:]) }

// deref follows the uoffset stored at pos and returns its target, which
// must leave room for at least need bytes.
func (d *Decoder) deref(pos uint64, need uint64, what string) (uint64, bool) {
	if d.err != nil {
		return 0, false
	}
	if !d.has(pos, sizeUOffset) {
		d.fail("%s: offset at %d outside the buffer", what, pos)
		return 0, false
	}
	off := d.u32(pos)
	if off == 0 || off > maxOffset {
		d.fail("%s: bad offset %d at %d", what, off, pos)
		return 0, false
	}
	target := pos + uint64(off)
	if !d.has(target, need) {
		d.fail("%s: offset at %d points outside the buffer", what, pos)
		return 0, false
	}
	return target, true
}

// Root returns the buffer's root table.
func (d *Decoder) Root(what string) Table {
	if d.err == nil && len(d.buf) < sizeUOffset {
		d.fail("%s: buffer of %d bytes is too short", what, len(d.buf))
	}
	pos, ok := d.deref(0, sizeUOffset, what)
	if !ok {
		return Table{}
	}
	return d.table(pos, what)
}

// table checks the table starting at pos and its vtable.
func (d *Decoder) table(pos uint64, what string) Table {
	if d.err != nil {
		return Table{}
	}
	if !d.has(pos, sizeUOffset) {
		d.fail("%s: table at %d outside the buffer", what, pos)
		return Table{}
	}
	vt := int64(pos) - int64(int32(d.u32(pos)))
	if vt < 0 || !d.has(uint64(vt), 2*sizeVOffset) {
		d.fail("%s: vtable of table at %d outside the buffer", what, pos)
		return Table{}
	}
	vtLen, objLen := d.u16(uint64(vt)), d.u16(uint64(vt)+sizeVOffset)
	switch {
	case vtLen < 2*sizeVOffset || vtLen%2 != 0 || !d.has(uint64(vt), uint64(vtLen)):
		d.fail("%s: bad vtable size %d of table at %d", what, vtLen, pos)
		return Table{}
	case objLen < sizeUOffset || !d.has(pos, uint64(objLen)):
		d.fail("%s: bad size %d of table at %d", what, objLen, pos)
		return Table{}
	}
	return Table{d: d, pos: pos, vt: uint64(vt), vtLen: vtLen, objLen: objLen, what: what}
}

// Table is a checked table: its header and vtable lie inside the buffer.
// The zero Table (from an absent or broken field) reads every field as
// absent.
type Table struct {
	d      *Decoder
	pos    uint64
	vt     uint64
	vtLen  uint16
	objLen uint16
	what   string
}

// Valid reports whether t is a real table (not the zero Table).
func (t Table) Valid() bool { return t.d != nil }

// field returns the absolute position of slot's value, which is size bytes
// long, or false when the field is absent or the decoder has failed.
func (t Table) field(slot int, size uint16) (uint64, bool) {
	if t.d == nil || t.d.err != nil {
		return 0, false
	}
	voff := uint64(2*sizeVOffset + sizeVOffset*slot)
	if voff+sizeVOffset > uint64(t.vtLen) {
		return 0, false
	}
	fo := t.d.u16(t.vt + voff)
	if fo == 0 {
		return 0, false
	}
	if fo < sizeUOffset || uint32(fo)+uint32(size) > uint32(t.objLen) {
		t.d.fail("%s: field %d at %d outside its table of %d bytes", t.what, slot, fo, t.objLen)
		return 0, false
	}
	return t.pos + uint64(fo), true
}

// Int64 returns an int64 field, or def when absent.
func (t Table) Int64(slot int, def int64) int64 {
	if p, ok := t.field(slot, 8); ok {
		return int64(binary.LittleEndian.Uint64(t.d.buf[p:]))
	}
	return def
}

// Int32 returns an int32 field, or def when absent.
func (t Table) Int32(slot int, def int32) int32 {
	if p, ok := t.field(slot, 4); ok {
		return int32(t.d.u32(p))
	}
	return def
}

// Uint32 returns a uint32 field, or def when absent.
func (t Table) Uint32(slot int, def uint32) uint32 {
	if p, ok := t.field(slot, 4); ok {
		return t.d.u32(p)
	}
	return def
}

// Int8 returns an int8 (or byte enum) field, or def when absent.
func (t Table) Int8(slot int, def int8) int8 {
	if p, ok := t.field(slot, 1); ok {
		return int8(t.d.buf[p])
	}
	return def
}

// Table returns a sub-table field; the zero Table when absent.
func (t Table) Table(slot int, what string) Table {
	p, ok := t.field(slot, sizeUOffset)
	if !ok {
		return Table{}
	}
	target, ok := t.d.deref(p, sizeUOffset, what)
	if !ok {
		return Table{}
	}
	return t.d.table(target, what)
}

// StringBytes returns the bytes of a string field, aliasing the buffer, and
// whether the field is present. The bytes are charged against the budget.
func (t Table) StringBytes(slot int) ([]byte, bool) {
	p, ok := t.field(slot, sizeUOffset)
	if !ok {
		return nil, false
	}
	return t.d.stringAt(p, t.what)
}

// String returns a copy of a string field ("" when absent).
func (t Table) String(slot int) string {
	b, _ := t.StringBytes(slot)
	return string(b)
}

// stringAt reads the string whose uoffset is stored at p.
func (d *Decoder) stringAt(p uint64, what string) ([]byte, bool) {
	target, ok := d.deref(p, sizeUOffset, what)
	if !ok {
		return nil, false
	}
	n := uint64(d.u32(target))
	start := target + sizeUOffset
	if !d.has(start, n+1) {
		d.fail("%s: string of %d bytes at %d runs past the buffer", what, n, target)
		return nil, false
	}
	if d.buf[start+n] != 0 {
		d.fail("%s: string at %d lacks its NUL terminator", what, target)
		return nil, false
	}
	if !d.spend(int64(n)+sizeUOffset, what) {
		return nil, false
	}
	return d.buf[start : start+n : start+n], true
}

// Bytes returns a [ubyte] vector field aliasing the buffer (capacity
// limited to its length, so appends never write into the buffer), and
// whether it is present.
func (t Table) Bytes(slot int) ([]byte, bool) {
	start, n, ok := t.vector(slot, 1)
	if !ok {
		return nil, false
	}
	return t.d.buf[start : start+n : start+n], true
}

// vector checks the vector field at slot with elements of elem bytes and
// returns the position of its first element and its length.
func (t Table) vector(slot int, elem uint64) (start, n uint64, ok bool) {
	p, ok := t.field(slot, sizeUOffset)
	if !ok {
		return 0, 0, false
	}
	target, ok := t.d.deref(p, sizeUOffset, t.what)
	if !ok {
		return 0, 0, false
	}
	n = uint64(t.d.u32(target))
	start = target + sizeUOffset
	if !t.d.has(start, n*elem) {
		t.d.fail("%s: vector of %d elements at %d runs past the buffer", t.what, n, target)
		return 0, 0, false
	}
	if !t.d.spend(int64(n*elem), t.what) {
		return 0, 0, false
	}
	return start, n, true
}

// Vector returns a vector field of offsets (tables or strings); the zero
// Vector (length 0) when absent.
func (t Table) Vector(slot int, what string) Vector {
	start, n, ok := t.vector(slot, sizeUOffset)
	if !ok {
		return Vector{}
	}
	return Vector{d: t.d, start: start, n: int(n), what: what}
}

// Vector is a checked vector of offsets: its elements lie inside the
// buffer, so Len is bounded by the buffer's size / 4.
type Vector struct {
	d     *Decoder
	start uint64
	n     int
	what  string
}

// Len returns the number of elements.
func (v Vector) Len() int { return v.n }

// Table returns element i as a table; i must be in [0, Len).
func (v Vector) Table(i int) Table {
	if v.d == nil || v.d.err != nil || i < 0 || i >= v.n {
		return Table{}
	}
	p := v.start + uint64(i)*sizeUOffset
	target, ok := v.d.deref(p, sizeUOffset, v.what)
	if !ok {
		return Table{}
	}
	return v.d.table(target, v.what)
}

// StringBytes returns element i as string bytes aliasing the buffer.
func (v Vector) StringBytes(i int) ([]byte, bool) {
	if v.d == nil || v.d.err != nil || i < 0 || i >= v.n {
		return nil, false
	}
	return v.d.stringAt(v.start+uint64(i)*sizeUOffset, v.what)
}
