package gzipx

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"testing"
)

// payload returns n bytes mixing random and repetitive (tar-like) data.
func payload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := []string{"usr/", "bin/", "lib/", "share/", "ELF", "\x00\x00\x00\x00", "the ", "and ", "func ", "return ", "0644", "root"}
	b := make([]byte, 0, n)
	for len(b) < n {
		switch rng.IntN(4) {
		case 0: // random run
			k := rng.IntN(2000)
			for range k {
				b = append(b, byte(rng.Uint32()))
			}
		case 1: // zero run
			b = append(b, make([]byte, rng.IntN(3000))...)
		default: // text-ish
			k := rng.IntN(400)
			for range k {
				b = append(b, words[rng.IntN(len(words))]...)
			}
		}
	}
	return b[:n]
}

func gzipStd(t testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func TestQuickRoundTrip(t *testing.T) {
	data := payload(3<<20, 1)
	for _, level := range []int{0, 1, 6, 9, -2} {
		z := gzipStd(t, data, level)
		got, err := io.ReadAll(NewInflater(bytes.NewReader(z)))
		if err != nil {
			t.Fatalf("level %d: %v", level, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("level %d: output differs (len %d vs %d)", level, len(got), len(data))
		}
	}
}
