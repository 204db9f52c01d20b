package gzipx

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func errorIs(err, target error) bool { return err != nil && errors.Is(err, target) }

func TestChecksumErrors(t *testing.T) {
	data := payload(100_000, 5)
	z := gzipStd(t, data, 6)
	n := len(z)
	for _, c := range []struct {
		name string
		at   int
	}{{"crc", n - 8}, {"crc high", n - 5}, {"isize", n - 4}, {"isize high", n - 1}} {
		bad := bytes.Clone(z)
		bad[c.at] ^= 0x40
		got, _, err := inflateAll(t, bytes.NewReader(bad))
		if !errorIs(err, ErrChecksum) {
			t.Errorf("%s: err = %v, want ErrChecksum", c.name, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: data before the trailer should all be returned", c.name)
		}
	}
}

// TestCorruptData flips bits across the deflate data: every result must be
// an error or exactly the original data, never a panic or hang.
func TestCorruptData(t *testing.T) {
	data := payload(100_000, 6)
	for _, level := range []int{1, 6, 9, -2, 0} {
		z := gzipStd(t, data, level)
		for i := 10; i < len(z)-8; i += max(1, len(z)/200) {
			bad := bytes.Clone(z)
			bad[i] ^= 1 << (i % 8)
			got, _, err := inflateAll(t, bytes.NewReader(bad))
			if err == nil {
				// Some bits (padding, unused code lengths) do not matter.
				if std, serr := stdInflate(bad); serr != nil || !bytes.Equal(got, data) || !bytes.Equal(std, data) {
					t.Fatalf("level %d: flip at %d went unnoticed", level, i)
				}
				continue
			}
			if !errorIs(err, ErrCorrupt) && !errorIs(err, ErrChecksum) && !errorIs(err, io.ErrUnexpectedEOF) && !errorIs(err, ErrHeader) {
				t.Fatalf("level %d flip at %d: unexpected error class: %v", level, i, err)
			}
		}
	}
}

// TestTruncated cuts streams at every length near their ends (header,
// first block, last block, trailer) and at many in between: always
// io.ErrUnexpectedEOF.
func TestTruncated(t *testing.T) {
	data := payload(20_000, 8)
	for _, z := range [][]byte{gzipStd(t, data, 6), gzipStd(t, data, 0), gzipKlauspost(t, data, -2)} {
		for n := 0; n < len(z); n++ {
			if n > 300 && n < len(z)-300 && n%17 != 0 {
				continue
			}
			_, _, err := inflateAll(t, bytes.NewReader(z[:n]))
			if !errorIs(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d of %d: err = %v", n, len(z), err)
			}
		}
	}
}

func TestTrailingGarbage(t *testing.T) {
	z := append(gzipStd(t, []byte("hello"), 6), "garbage!!!"...)
	if _, _, err := inflateAll(t, bytes.NewReader(z)); !errorIs(err, ErrHeader) {
		t.Fatalf("err = %v, want ErrHeader", err)
	}
}

func TestSourceError(t *testing.T) {
	boom := errors.New("boom")
	z := gzipStd(t, payload(300_000, 9), 6)
	r := io.MultiReader(bytes.NewReader(z[:len(z)/2]), errReader{boom})
	if _, _, err := inflateAll(t, r); !errorIs(err, boom) {
		t.Fatalf("err = %v, want the source's error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestResumeErrors covers the resume reader's argument checks and its
// handling of input that ends mid-block.
func TestResumeErrors(t *testing.T) {
	if _, err := NewResumeReader(bytes.NewReader(nil), 8, nil); err == nil {
		t.Error("bits 8 accepted")
	}
	if _, err := NewResumeReader(bytes.NewReader(nil), 0, make([]byte, WindowSize+1)); err == nil {
		t.Error("oversized window accepted")
	}
	r, _ := NewResumeReader(bytes.NewReader(nil), 0, nil)
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("empty input: %d, %v; want clean EOF", n, err)
	}
	r, _ = NewResumeReader(bytes.NewReader(nil), 3, nil)
	if _, err := r.Read(make([]byte, 10)); !errorIs(err, io.ErrUnexpectedEOF) {
		t.Errorf("empty input with bits: %v", err)
	}
	data := payload(100_000, 10)
	z := gzipStd(t, data, 6)
	r, _ = NewResumeReader(bytes.NewReader(z[10:len(z)/2]), 0, nil)
	got, err := io.ReadAll(r)
	if !errorIs(err, io.ErrUnexpectedEOF) {
		t.Errorf("input cut mid-block: %v", err)
	}
	if !bytes.HasPrefix(data, got) || len(got) == 0 {
		t.Errorf("input cut mid-block: returned %d bytes not a prefix of the data", len(got))
	}
	// A short window is the most recent output; a distance past it fails.
	var w bitWriter
	w.bits(1, 1)         // BFINAL
	w.bits(1, 2)         // fixed Huffman
	w.code(0b0000001, 7) // length 3
	w.code(0b00010, 5)   // distance 3
	w.code(0, 7)         // end of block
	r, _ = NewResumeReader(bytes.NewReader(w.bytes()), 0, []byte("ab"))
	if _, err := io.ReadAll(r); !errorIs(err, ErrCorrupt) {
		t.Errorf("distance beyond a short window: %v", err)
	}
}

// bitWriter packs deflate bit fields for hand-made streams.
type bitWriter struct {
	buf []byte
	n   uint
}

// bits appends v's low n bits, least significant first.
func (w *bitWriter) bits(v uint32, n uint) {
	for i := range n {
		if w.n%8 == 0 {
			w.buf = append(w.buf, 0)
		}
		w.buf[len(w.buf)-1] |= byte(v>>i&1) << (w.n % 8)
		w.n++
	}
}

// code appends a Huffman code, most significant bit first.
func (w *bitWriter) code(c uint32, n uint) {
	for i := n; i > 0; i-- {
		w.bits(c>>(i-1)&1, 1)
	}
}

func (w *bitWriter) bytes() []byte { return w.buf }
