package gzipx

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
	"testing/iotest"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

var gzipFixtures = []string{"mixed.tar.gz", "gzip-cli-fname.tar.gz", "multi-member.tar.gz", "stored-blocks.tar.gz"}

// checkpoint is a placed checkpoint with its window.
type checkpoint struct {
	ztoctest.ExpectCheckpoint
	window []byte
}

// loadFixture returns the layer blob of the AWS-made fixture name and what
// its zTOC says.
func loadFixture(t *testing.T, name string) ([]byte, ztoctest.Expect) {
	t.Helper()
	f := ztoctest.Lookup(t, name)
	return f.Layer(t), f.Expect
}

// placeCheckpoints inflates blob with the reference tooling's placement rule
// applied to the reported boundaries and returns the checkpoints and the
// whole output.
func placeCheckpoints(t *testing.T, r io.Reader, span int64) ([]checkpoint, []byte) {
	t.Helper()
	z := NewInflater(r)
	var cps []checkpoint
	last := int64(0)
	z.SetBoundaryFunc(func(b Boundary) {
		if b.LastBlock || !(b.Out == 0 || b.Out-last > span) {
			return
		}
		w := z.Window(nil)
		sum := sha256.Sum256(w)
		cps = append(cps, checkpoint{ztoctest.ExpectCheckpoint{In: b.In, Out: b.Out, Bits: b.Bits, WindowSHA256: hex.EncodeToString(sum[:])}, w})
		last = b.Out
	})
	out, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return cps, out
}

func TestFixtureCheckpoints(t *testing.T) {
	for _, name := range gzipFixtures {
		t.Run(name, func(t *testing.T) {
			blob, exp := loadFixture(t, name)
			cps, out := placeCheckpoints(t, bytes.NewReader(blob), exp.SpanSize)
			want, err := stdInflate(blob)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("output differs from compress/gzip (%d vs %d bytes)", len(out), len(want))
			}
			if len(cps) != len(exp.Checkpoints) {
				t.Errorf("got %d checkpoints, want %d", len(cps), len(exp.Checkpoints))
			}
			for i := range min(len(cps), len(exp.Checkpoints)) {
				if cps[i].ExpectCheckpoint != exp.Checkpoints[i] {
					t.Errorf("checkpoint %d = %+v, want %+v", i, cps[i].ExpectCheckpoint, exp.Checkpoints[i])
				}
			}
		})
	}
}

// TestFixtureResume resumes from every checkpoint over exactly the span's
// compressed bytes and compares with the whole inflated output.
func TestFixtureResume(t *testing.T) {
	for _, name := range gzipFixtures {
		t.Run(name, func(t *testing.T) {
			blob, exp := loadFixture(t, name)
			cps, out := placeCheckpoints(t, bytes.NewReader(blob), exp.SpanSize)
			for i, cp := range cps {
				start := cp.In
				if cp.Bits != 0 {
					start--
				}
				end, outEnd := int64(len(blob)), int64(len(out))
				if i+1 < len(cps) {
					end, outEnd = cps[i+1].In, cps[i+1].Out
				}
				want := out[cp.Out:outEnd]
				var src io.Reader = bytes.NewReader(blob[start:end])
				if i%3 == 1 {
					src = iotest.HalfReader(iotest.OneByteReader(src)) // exercise input refills
				}
				r, err := NewResumeReader(src, cp.Bits, cp.window)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("span %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("span %d: got %d bytes, want %d (first difference at %d)", i, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

// TestFixtureByteReads inflates a fixture fed one byte per read, which
// drives every refill path, and checks the boundaries do not move.
func TestFixtureByteReads(t *testing.T) {
	blob, exp := loadFixture(t, "multi-member.tar.gz")
	cps, _ := placeCheckpoints(t, iotest.OneByteReader(bytes.NewReader(blob)), exp.SpanSize)
	if len(cps) != len(exp.Checkpoints) {
		t.Fatalf("got %d checkpoints, want %d", len(cps), len(exp.Checkpoints))
	}
	for i := range cps {
		if cps[i].ExpectCheckpoint != exp.Checkpoints[i] {
			t.Errorf("checkpoint %d = %+v, want %+v", i, cps[i].ExpectCheckpoint, exp.Checkpoints[i])
		}
	}
}

func stdInflate(z []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
