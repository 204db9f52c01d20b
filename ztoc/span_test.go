package ztoc

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// gzipModel returns a gzip zTOC with the given checkpoints (in, out, bits).
func gzipModel(compressed, uncompressed int64, cps ...[3]int64) *Ztoc {
	z := &Ztoc{CompressedArchiveSize: compressed, UncompressedArchiveSize: uncompressed,
		CompressionAlgorithm: CompressionGzip, Gzip: &GzipZinfo{SpanSize: 100}}
	for i, c := range cps {
		z.Gzip.Checkpoints = append(z.Gzip.Checkpoints, Checkpoint{In: c[0], Out: c[1], Bits: uint8(c[2]), Window: make([]byte, WindowSize)})
		z.SpanDigests = append(z.SpanDigests, digest.FromString(string(rune('a'+i))))
	}
	z.MaxSpanID = SpanID(len(cps) - 1)
	return z
}

func TestSpanGzipGeometry(t *testing.T) {
	z := gzipModel(1000, 5000, [3]int64{10, 0, 0}, [3]int64{300, 1200, 3}, [3]int64{600, 2600, 0})
	want := []Span{
		{ID: 0, CompressedStart: 10, CompressedEnd: 300, UncompressedStart: 0, UncompressedEnd: 1200},
		// Bits ≠ 0: the byte In−1 is shared with the span before.
		{ID: 1, CompressedStart: 299, CompressedEnd: 600, UncompressedStart: 1200, UncompressedEnd: 2600},
		// The last span runs to the end of the blob (trailer included).
		{ID: 2, CompressedStart: 600, CompressedEnd: 1000, UncompressedStart: 2600, UncompressedEnd: 5000},
	}
	if z.NumSpans() != 3 {
		t.Fatalf("NumSpans = %d", z.NumSpans())
	}
	for i, w := range want {
		s, err := z.Span(SpanID(i))
		if err != nil {
			t.Fatal(err)
		}
		if s.Checkpoint != &z.Gzip.Checkpoints[i] || s.Digest != z.SpanDigests[i] {
			t.Errorf("span %d: checkpoint/digest not the zTOC's", i)
		}
		s.Checkpoint, s.Digest = nil, ""
		if s != w {
			t.Errorf("span %d = %+v, want %+v", i, s, w)
		}
	}
	if s, e := z.HeaderRange(); s != 0 || e != 10 {
		t.Errorf("HeaderRange = [%d,%d), want [0,10)", s, e)
	}
	for _, c := range []struct {
		off  int64
		want SpanID
	}{{-5, 0}, {0, 0}, {1199, 0}, {1200, 1}, {2599, 1}, {2600, 2}, {4999, 2}, {1 << 40, 2}} {
		if got := z.SpanOf(c.off); got != c.want {
			t.Errorf("SpanOf(%d) = %d, want %d", c.off, got, c.want)
		}
	}
	for _, c := range []struct {
		off, size   int64
		first, last SpanID
	}{{0, 1200, 0, 0}, {0, 1201, 0, 1}, {1199, 2, 0, 1}, {100, 4000, 0, 2}, {2600, 0, 2, 2}} {
		if f, l := z.SpansFor(c.off, c.size); f != c.first || l != c.last {
			t.Errorf("SpansFor(%d,%d) = %d..%d, want %d..%d", c.off, c.size, f, l, c.first, c.last)
		}
	}
}

func TestSpanTarGeometry(t *testing.T) {
	z := &Ztoc{CompressedArchiveSize: 250, UncompressedArchiveSize: 250, MaxSpanID: 2,
		SpanDigests: []digest.Digest{"a", "b", "c"}, Tar: &TarZinfo{Version: 2, SpanSize: 100, Size: 250}}
	for i, w := range [][2]int64{{0, 100}, {100, 200}, {200, 250}} {
		s, err := z.Span(SpanID(i))
		if err != nil {
			t.Fatal(err)
		}
		if s.CompressedStart != w[0] || s.CompressedEnd != w[1] || s.UncompressedStart != w[0] ||
			s.UncompressedEnd != w[1] || s.Checkpoint != nil {
			t.Errorf("span %d = %+v, want [%d,%d)", i, s, w[0], w[1])
		}
	}
	if got := z.SpanOf(199); got != 1 {
		t.Errorf("SpanOf(199) = %d", got)
	}
	if got := z.SpanOf(1000); got != 2 {
		t.Errorf("SpanOf(1000) = %d", got)
	}
	if s, e := z.HeaderRange(); s != 0 || e != 0 {
		t.Errorf("HeaderRange = [%d,%d), want empty", s, e)
	}
}

// TestSpanOutOfRange checks that bad ids and inconsistent tables give
// errors, not panics.
func TestSpanOutOfRange(t *testing.T) {
	z := gzipModel(1000, 5000, [3]int64{10, 0, 0}, [3]int64{300, 1200, 3})
	for _, id := range []SpanID{-1, 2, 1 << 30} {
		if _, err := z.Span(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Span(%d) err = %v, want ErrInvalid", id, err)
		}
	}
	z.SpanDigests = z.SpanDigests[:1]
	if _, err := z.Span(1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Span with missing digest: err = %v", err)
	}
	bad := gzipModel(200, 5000, [3]int64{10, 0, 0}, [3]int64{300, 1200, 0})
	if _, err := bad.Span(1); !errors.Is(err, ErrInvalid) {
		t.Errorf("span ending before it starts: err = %v", err)
	}
	empty := &Ztoc{}
	if empty.NumSpans() != 0 || empty.SpanOf(5) != 0 {
		t.Errorf("empty zTOC: NumSpans %d SpanOf %d", empty.NumSpans(), empty.SpanOf(5))
	}
	if _, err := empty.Span(0); err == nil {
		t.Error("Span(0) of an empty zTOC succeeded")
	}
}

// TestSpanFixtureGeometry checks the geometry of every reference zTOC
// against the fixture's checkpoints.
func TestSpanFixtureGeometry(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, err := Unmarshal(f.Ztoc(t))
			if err != nil {
				t.Fatal(err)
			}
			e := f.Expect
			if z.NumSpans() != int(e.MaxSpanID)+1 {
				t.Fatalf("NumSpans = %d, want %d", z.NumSpans(), e.MaxSpanID+1)
			}
			var prevEnd int64
			for i := range z.NumSpans() {
				s, err := z.Span(SpanID(i))
				if err != nil {
					t.Fatal(err)
				}
				if i > 0 && s.UncompressedStart != prevEnd {
					t.Errorf("span %d starts at %d, previous ended at %d", i, s.UncompressedStart, prevEnd)
				}
				prevEnd = s.UncompressedEnd
				// A span can be empty (multi-member ends with an empty final
				// block after its last checkpoint); SpanOf never names it.
				if s.UncompressedSize() > 0 && (z.SpanOf(s.UncompressedStart) != s.ID || z.SpanOf(s.UncompressedEnd-1) != s.ID) {
					t.Errorf("SpanOf disagrees with span %d [%d,%d)", i, s.UncompressedStart, s.UncompressedEnd)
				}
			}
			last, _ := z.Span(z.MaxSpanID)
			if last.CompressedEnd != e.CompressedArchiveSize || prevEnd != e.UncompressedArchiveSize {
				t.Errorf("last span ends at %d/%d, want %d/%d", last.CompressedEnd, prevEnd,
					e.CompressedArchiveSize, e.UncompressedArchiveSize)
			}
		})
	}
}
