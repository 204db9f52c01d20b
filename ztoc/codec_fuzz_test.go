package ztoc

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// FuzzUnmarshal: arbitrary bytes give an error wrapping ErrInvalid or a
// model that re-encodes and decodes to the same document. Seeded with the
// reference zTOCs and two small synthetic ones (small seeds mutate fast).
func FuzzUnmarshal(f *testing.F) {
	for _, fx := range ztoctest.Fixtures(f) {
		f.Add(fx.Ztoc(f))
	}
	for _, z := range []*Ztoc{validGzipZtoc(), validTarZtoc()} {
		b, err := Marshal(z)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeRoundTrip(t, b)
	})
}

// FuzzGzipZinfo: a blob either is refused or re-encodes to itself (the
// format has exactly one encoding per content and version).
func FuzzGzipZinfo(f *testing.F) {
	one := make([]byte, zinfoHeaderSize+zinfoRecordSize)
	binary.LittleEndian.PutUint32(one, 1)
	binary.LittleEndian.PutUint64(one[4:], 65536)
	binary.LittleEndian.PutUint64(one[12:], 10)
	f.Add(one)
	legacy := append([]byte(nil), one[:zinfoHeaderSize]...)
	f.Add(legacy)
	two := append(bytes.Clone(one), one[zinfoHeaderSize:]...)
	binary.LittleEndian.PutUint32(two, 2)
	f.Add(two)
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := unmarshalGzipZinfo(b)
		if err != nil {
			mustInvalid(t, err)
			return
		}
		out, err := marshalGzipZinfo(g)
		if err != nil {
			t.Fatalf("decoded blob does not re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs from the blob")
		}
	})
}

// FuzzTarZinfo: a blob either is refused or decodes to values that
// re-encode and decode to the same values.
func FuzzTarZinfo(f *testing.F) {
	f.Add(marshalTarZinfo(&TarZinfo{Version: 2, SpanSize: 300000, Size: 2469888}))
	f.Add(marshalTarZinfo(&TarZinfo{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		z, err := unmarshalTarZinfo(b)
		if err != nil {
			mustInvalid(t, err)
			return
		}
		z2, err := unmarshalTarZinfo(marshalTarZinfo(z))
		if err != nil || *z2 != *z {
			t.Fatalf("round trip: %+v -> %+v, %v", z, z2, err)
		}
	})
}
