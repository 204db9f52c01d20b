package gzipx

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"
)

// fuzzOutputLimit bounds how much output a fuzz case may produce (deflate
// expands at most ~1032:1, so this also bounds time).
const fuzzOutputLimit = 4 << 20

func fuzzSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add(gzipStd(f, []byte("hello, hello, hello world"), 6))
	f.Add(gzipStd(f, payload(3000, 1), 1))
	f.Add(gzipStd(f, payload(2000, 2), 0))
	f.Add(gzipKlauspost(f, payload(2000, 3), -2))
	f.Add(append(gzipStd(f, []byte("a"), 9), gzipStd(f, []byte("bb"), 9)...))
	f.Add(gzipHeader(flagExtra|flagName|flagComment|flagHCRC, []byte("x"), []byte("n"), []byte("c"), false))
}

// readLimited reads r to its end or to fuzzOutputLimit bytes.
func readLimited(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, io.LimitReader(r, fuzzOutputLimit))
	return buf.Bytes(), err
}

// FuzzInflate feeds arbitrary bytes to the Inflater: it must not panic or
// hang, and wherever both it and compress/gzip accept the input they must
// agree on the output.
func FuzzInflate(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		z := NewInflater(bytes.NewReader(data))
		var last int64
		z.SetBoundaryFunc(func(b Boundary) {
			if b.Out < last || b.In > int64(len(data)) || b.Bits > 7 {
				t.Fatalf("boundary %+v out of order or range", b)
			}
			last = b.Out
			_ = z.Window(nil)
		})
		got, err := readLimited(z)
		if len(got) == fuzzOutputLimit {
			return
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrHeader) &&
			!errors.Is(err, ErrChecksum) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error class: %v", err)
		}
		std, serr := stdRead(data)
		if len(std) == fuzzOutputLimit {
			return
		}
		if err == nil && serr == nil && !bytes.Equal(got, std) {
			t.Fatalf("output differs from compress/gzip")
		}
		if err == nil && serr != nil {
			t.Fatalf("accepted input compress/gzip rejects (%v)", serr)
		}
	})
}

func stdRead(data []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return readLimited(r)
}

// FuzzResume feeds arbitrary bytes, bit counts and windows to the resume
// reader: errors are fine, panics and hangs are not.
func FuzzResume(f *testing.F) {
	z := gzipStd(f, payload(5000, 4), 6)
	f.Add(z[10:], uint8(0), []byte("window"))
	f.Add(z[100:], uint8(3), []byte{})
	f.Add([]byte{0x01, 0x03, 0x00, 0xfc, 0xff, 'a', 'b', 'c'}, uint8(0), []byte("xyz"))
	f.Fuzz(func(t *testing.T, data []byte, bits uint8, window []byte) {
		r, err := NewResumeReader(bytes.NewReader(data), bits, window)
		if err != nil {
			if bits <= 7 && len(window) <= WindowSize {
				t.Fatalf("valid arguments rejected: %v", err)
			}
			return
		}
		_, _ = readLimited(r)
	})
}
