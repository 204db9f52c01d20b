package ztoc

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// fixtureZinfo returns the raw zinfo blob of a fixture and its decoded zTOC.
func fixtureZinfo(t *testing.T, name string) ([]byte, *Ztoc) {
	t.Helper()
	f := ztoctest.Lookup(t, name)
	z, err := Unmarshal(f.Ztoc(t))
	if err != nil {
		t.Fatal(err)
	}
	var blob []byte
	if z.Gzip != nil {
		blob, err = marshalGzipZinfo(z.Gzip)
	} else {
		blob = marshalTarZinfo(z.Tar)
	}
	if err != nil {
		t.Fatal(err)
	}
	return blob, z
}

func TestGzipZinfoV2RoundTrip(t *testing.T) {
	for _, name := range []string{"mixed.tar.gz", "gzip-cli-fname.tar.gz", "multi-member.tar.gz", "stored-blocks.tar.gz"} {
		blob, z := fixtureZinfo(t, name)
		n := len(z.Gzip.Checkpoints)
		if len(blob) != 12+n*32785 {
			t.Fatalf("%s: blob of %d bytes for %d checkpoints", name, len(blob), n)
		}
		g, err := unmarshalGzipZinfo(blob)
		if err != nil {
			t.Fatal(err)
		}
		if g.Legacy || len(g.Checkpoints) != n || g.SpanSize != z.Gzip.SpanSize {
			t.Fatalf("%s: decoded legacy=%v n=%d span=%d", name, g.Legacy, len(g.Checkpoints), g.SpanSize)
		}
		// Windows are copies: aliasing would keep the whole zTOC blob
		// alive while the layer is mounted.
		for i, c := range g.Checkpoints {
			if inside(c.Window, blob) {
				t.Fatalf("%s: window %d aliases the blob", name, i)
			}
			if cap(c.Window) != WindowSize {
				t.Fatalf("%s: window %d has capacity %d: appending would overwrite the next window", name, i, cap(c.Window))
			}
		}
		again, err := marshalGzipZinfo(g)
		if err != nil || !bytes.Equal(again, blob) {
			t.Fatalf("%s: re-encoding differs (err %v)", name, err)
		}
	}
}

func inside(sub, buf []byte) bool {
	s, b := uintptr(unsafe.Pointer(unsafe.SliceData(sub))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return s >= b && s+uintptr(len(sub)) <= b+uintptr(len(buf))
}

// TestGzipZinfoV1 checks a legacy blob (checkpoint 0 omitted) decodes with
// the implied checkpoint and re-encodes to the same v1 bytes, also through
// a whole zTOC.
func TestGzipZinfoV1(t *testing.T) {
	v2, z := fixtureZinfo(t, "mixed.tar.gz") // its checkpoint 0 is the implied one
	n := len(z.Gzip.Checkpoints)
	v1 := append([]byte(nil), v2[:12]...)
	v1 = append(v1, v2[12+32785:]...)
	g, err := unmarshalGzipZinfo(v1)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Legacy || len(g.Checkpoints) != n {
		t.Fatalf("legacy=%v, %d checkpoints, want true, %d", g.Legacy, len(g.Checkpoints), n)
	}
	c0 := g.Checkpoints[0]
	if c0.In != 10 || c0.Out != 0 || c0.Bits != 0 || !allZero(c0.Window) {
		t.Fatalf("implied checkpoint 0 = in %d out %d bits %d", c0.In, c0.Out, c0.Bits)
	}
	again, err := marshalGzipZinfo(g)
	if err != nil || !bytes.Equal(again, v1) {
		t.Fatalf("v1 re-encoding differs (err %v)", err)
	}

	z.Gzip = g
	buf, err := Marshal(z)
	if err != nil {
		t.Fatal(err)
	}
	z2, err := Unmarshal(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !z2.Gzip.Legacy {
		t.Fatal("legacy flag lost through a whole zTOC")
	}
	if buf2, _ := Marshal(z2); !bytes.Equal(buf2, buf) {
		t.Fatal("v1 zTOC does not re-encode byte for byte")
	}
}

func TestGzipZinfoRefuses(t *testing.T) {
	v2, _ := fixtureZinfo(t, "mixed.tar.gz")
	setN := func(b []byte, n int32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b, uint32(n))
		return b
	}
	cases := map[string][]byte{
		"Empty":         nil,
		"ShortHeader":   v2[:11],
		"ZeroCount":     setN(v2[:12], 0),
		"NegativeCount": setN(v2, -1),
		"HugeCount":     setN(v2, 1<<31-1),
		"CountTooLow":   setN(v2, 2), // body holds 24 records: neither 2 nor 1
		"CountTooHigh":  setN(v2, 26),
		"PartialRecord": v2[:len(v2)-1],
		"ExtraByte":     append(append([]byte(nil), v2...), 0),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := unmarshalGzipZinfo(b)
			mustInvalid(t, err)
		})
	}
	// Every length between header and one record is invalid for N=1 and
	// N=2 alike, except the two exact ones.
	for l := 12; l < 12+2*32785; l += 101 {
		b := setN(v2[:l], 2)
		if _, err := unmarshalGzipZinfo(b); err == nil && l != 12+32785 {
			t.Fatalf("length %d accepted for N=2", l)
		}
	}
}

func TestGzipZinfoMarshalRefuses(t *testing.T) {
	_, z := fixtureZinfo(t, "gzip-cli-fname.tar.gz") // checkpoint 0 at in=20
	g := *z.Gzip
	g.Legacy = true
	_, err := marshalGzipZinfo(&g)
	mustInvalid(t, err)
	_, err = marshalGzipZinfo(&GzipZinfo{SpanSize: 1})
	mustInvalid(t, err)
	_, err = marshalGzipZinfo(&GzipZinfo{Checkpoints: []Checkpoint{{In: 10, Window: make([]byte, 3)}}})
	mustInvalid(t, err)
}

func TestTarZinfo(t *testing.T) {
	blob, z := fixtureZinfo(t, "plain.tar")
	want := TarZinfo{Version: 2, SpanSize: 300000, Size: 2469888}
	if *z.Tar != want {
		t.Fatalf("tar zinfo %+v, want %+v", *z.Tar, want)
	}
	got, err := unmarshalTarZinfo(blob)
	if err != nil || *got != want {
		t.Fatalf("decode %+v, %v", got, err)
	}
	for n := range len(blob) {
		if _, err := unmarshalTarZinfo(blob[:n]); err == nil {
			// A prefix can only be accepted if every field it reads lies
			// inside it, which the layout of a 3-field table rules out.
			t.Fatalf("prefix of %d bytes accepted", n)
		} else {
			mustInvalid(t, err)
		}
	}
	// Defaults: an empty table reads as zeros and encodes back the same.
	empty := marshalTarZinfo(&TarZinfo{})
	got, err = unmarshalTarZinfo(empty)
	if err != nil || *got != (TarZinfo{}) {
		t.Fatalf("empty tar zinfo: %+v, %v", got, err)
	}
}
