package gzipx

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	kgzip "github.com/klauspost/compress/gzip"
)

// payload returns n bytes mixing random, zero and repetitive text runs, in
// proportions like a layer's tar stream.
func payload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := []string{"usr/", "bin/", "lib/", "share/", "ELF", "\x00\x00\x00\x00", "the ", "and ", "func ", "return ", "0644", "root"}
	b := make([]byte, 0, n+8192)
	for len(b) < n {
		switch rng.IntN(4) {
		case 0:
			k := rng.IntN(250)
			for range k {
				b = binary.LittleEndian.AppendUint64(b, rng.Uint64())
			}
		case 1:
			b = append(b, make([]byte, rng.IntN(3000))...)
		default:
			k := rng.IntN(400)
			for range k {
				b = append(b, words[rng.IntN(len(words))]...)
			}
		}
	}
	return b[:n]
}

func gzipStd(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipKlauspost(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := kgzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// inflateAll inflates z with the Inflater, checking that every boundary is
// reported before any byte past it is returned.
func inflateAll(t *testing.T, r io.Reader) ([]byte, []Boundary, error) {
	t.Helper()
	z := NewInflater(r)
	var got []byte
	var bs []Boundary
	z.SetBoundaryFunc(func(b Boundary) {
		if int64(len(got)) > b.Out {
			t.Errorf("boundary at out %d reported after %d bytes were returned", b.Out, len(got))
		}
		bs = append(bs, b)
	})
	buf := make([]byte, 7000)
	for {
		n, err := z.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			return got, bs, nil
		}
		if err != nil {
			return got, bs, err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 2, 100, WindowSize - 1, WindowSize, WindowSize + 1, 100_000, 1<<20 + 17}
	big := payload(sizes[len(sizes)-1], 1)
	for _, size := range sizes {
		data := big[:size]
		for level := -2; level <= 9; level++ {
			z := gzipStd(t, data, level)
			checkRoundTrip(t, "stdlib", level, data, z)
		}
		for level := -3; level <= 9; level++ {
			z := gzipKlauspost(t, data, level)
			checkRoundTrip(t, "klauspost", level, data, z)
		}
	}
}

func checkRoundTrip(t *testing.T, writer string, level int, data, z []byte) {
	t.Helper()
	got, bs, err := inflateAll(t, bytes.NewReader(z))
	if err != nil {
		t.Fatalf("%s level %d, %d bytes: %v", writer, level, len(data), err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s level %d, %d bytes: output differs at %d", writer, level, len(data), firstDiff(got, data))
	}
	if len(bs) == 0 || bs[0] != (Boundary{In: 10, AfterHeader: true}) {
		t.Fatalf("%s level %d: first boundary %+v, want right after the header", writer, level, bs)
	}
	if last := bs[len(bs)-1]; !last.LastBlock || last.Out != int64(len(data)) {
		t.Fatalf("%s level %d: last boundary %+v, want LastBlock at out %d", writer, level, last, len(data))
	}
}

// TestResumeEveryBoundary resumes from every block boundary of streams with
// many small blocks and checks the bytes up to the next boundary.
func TestResumeEveryBoundary(t *testing.T) {
	data := payload(600_000, 7)
	var streams [][]byte
	for _, level := range []int{0, 1, 6, 9, -2} {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, level)
		for off := 0; off < len(data); off += 9000 {
			zw.Write(data[off:min(off+9000, len(data))])
			zw.Flush() // sync flush: empty stored blocks, byte-aligned boundaries
		}
		zw.Close()
		streams = append(streams, buf.Bytes())
	}
	streams = append(streams, gzipKlauspost(t, data, 1), gzipKlauspost(t, data, -3), gzipStd(t, data, 5),
		// Two members: spans end right after the second header and resume
		// there with the first member's output as the window.
		append(gzipStd(t, data[:300_000], 6), gzipKlauspost(t, data[300_000:], 2)...))
	for si, z := range streams {
		type point struct {
			b      Boundary
			window []byte
		}
		var pts []point
		inf := NewInflater(bytes.NewReader(z))
		inf.SetBoundaryFunc(func(b Boundary) {
			if !b.LastBlock {
				pts = append(pts, point{b, inf.Window(nil)})
			}
		})
		if _, err := io.ReadAll(inf); err != nil {
			t.Fatal(err)
		}
		for i, p := range pts {
			start := p.b.In
			if p.b.Bits != 0 {
				start--
			}
			end, outEnd := int64(len(z)), int64(len(data))
			if i+1 < len(pts) {
				end, outEnd = pts[i+1].b.In, pts[i+1].b.Out
			}
			r, err := NewResumeReader(bytes.NewReader(z[start:end]), p.b.Bits, p.window)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("stream %d boundary %d %+v: %v", si, i, p.b, err)
			}
			if !bytes.Equal(got, data[p.b.Out:outEnd]) {
				t.Fatalf("stream %d boundary %d %+v: output differs", si, i, p.b)
			}
		}
	}
}

// TestConcatenatedMembers checks offsets run on across members and that the
// window at a member's first boundary holds the previous member's output.
func TestConcatenatedMembers(t *testing.T) {
	a, b, c := payload(50_000, 2), []byte{}, payload(70_000, 3)
	z := append(append(gzipStd(t, a, 6), gzipKlauspost(t, b, 1)...), gzipStd(t, c, 0)...)
	got, bs, err := inflateAll(t, iotest.HalfReader(bytes.NewReader(z)))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, a...), c...)
	if !bytes.Equal(got, want) {
		t.Fatal("output differs")
	}
	var heads []Boundary
	for _, x := range bs {
		if x.AfterHeader {
			heads = append(heads, x)
		}
	}
	if len(heads) != 3 || heads[1].Out != int64(len(a)) || heads[2].Out != int64(len(a)) {
		t.Fatalf("member boundaries %+v", heads)
	}
	if heads[1].In != int64(len(gzipStd(t, a, 6)))+10 {
		t.Fatalf("second member boundary at %d", heads[1].In)
	}
	// The window runs on across members: it is the stream's last 32 KiB.
	inf := NewInflater(bytes.NewReader(z))
	var windows [][]byte
	inf.SetBoundaryFunc(func(b Boundary) {
		if b.AfterHeader {
			windows = append(windows, inf.Window(make([]byte, 5)))
		}
	})
	if _, err := io.ReadAll(inf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(windows[0], make([]byte, WindowSize)) || !bytes.Equal(windows[1], a[len(a)-WindowSize:]) {
		t.Fatal("windows at member starts are not the preceding output")
	}
}

// gzipHeader builds a member header with every optional field.
func gzipHeader(flags byte, extra, name, comment []byte, badHCRC bool) []byte {
	h := []byte{0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3}
	if flags&flagExtra != 0 {
		h = binary.LittleEndian.AppendUint16(h, uint16(len(extra)))
		h = append(h, extra...)
	}
	if flags&flagName != 0 {
		h = append(append(h, name...), 0)
	}
	if flags&flagComment != 0 {
		h = append(append(h, comment...), 0)
	}
	if flags&flagHCRC != 0 {
		sum := uint16(crc32.ChecksumIEEE(h))
		if badHCRC {
			sum++
		}
		h = binary.LittleEndian.AppendUint16(h, sum)
	}
	return h
}

// member builds a gzip member around a raw deflate stream of data.
func member(t *testing.T, header, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.Write(header)
	fw, _ := flate.NewWriter(&buf, 6)
	fw.Write(data)
	fw.Close()
	buf.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(data)), uint32(len(data))))
	return buf.Bytes()
}

func TestHeaders(t *testing.T) {
	data := payload(40_000, 4)
	extra := bytes.Repeat([]byte("xy"), 300)
	for flags := byte(0); flags < 32; flags++ {
		h := gzipHeader(flags, extra, []byte("file.tar"), []byte("a comment"), false)
		got, bs, err := inflateAll(t, bytes.NewReader(member(t, h, data)))
		if err != nil {
			t.Fatalf("flags %#x: %v", flags, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("flags %#x: output differs", flags)
		}
		if bs[0].In != int64(len(h)) {
			t.Fatalf("flags %#x: first boundary at %d, header is %d bytes", flags, bs[0].In, len(h))
		}
	}
	bad := member(t, gzipHeader(flagHCRC|flagName, nil, []byte("n"), nil, true), data)
	if _, _, err := inflateAll(t, bytes.NewReader(bad)); !errorIs(err, ErrChecksum) {
		t.Fatalf("bad header CRC: %v", err)
	}
	for _, h := range [][]byte{
		{0x1f, 0x8c, 8, 0, 0, 0, 0, 0, 0, 3},
		{0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3},
		{0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3},
	} {
		if _, _, err := inflateAll(t, bytes.NewReader(member(t, h, data))); !errorIs(err, ErrHeader) {
			t.Fatalf("header % x: %v", h, err)
		}
	}
}
