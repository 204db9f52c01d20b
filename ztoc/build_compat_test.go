package ztoc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// buildFixture builds the zTOC of a fixture's layer with the fixture's span
// size, streaming from the file.
func buildFixture(t *testing.T, f ztoctest.Fixture) *Ztoc {
	t.Helper()
	fh, err := os.Open(f.LayerPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	z, err := Build(context.Background(), fh, BuildOptions{SpanSize: f.Expect.SpanSize, BuildToolIdentifier: f.Expect.BuildToolIdentifier})
	if err != nil {
		t.Fatalf("Build(%s): %v", f.Name, err)
	}
	return z
}

// TestBuildMatchesReference builds every fixture layer and compares every
// field the reference zTOC holds.
func TestBuildMatchesReference(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z := buildFixture(t, f)
			checkAgainstExpect(t, z, f.Expect)
			// The strongest check: the very bytes (and so the digest) the
			// reference wrote.
			b, err := Marshal(z)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if got := digest.FromBytes(b).String(); got != f.Expect.ZtocDigest || !bytes.Equal(b, f.Ztoc(t)) {
				t.Errorf("Marshal(Build) = %s (%d bytes), want the reference %s (%d bytes)",
					got, len(b), f.Expect.ZtocDigest, f.Expect.ZtocSize)
			}
		})
	}
}

func checkAgainstExpect(t *testing.T, z *Ztoc, e ztoctest.Expect) {
	t.Helper()
	if z.Version != e.Version || z.BuildToolIdentifier != e.BuildToolIdentifier || z.CompressionAlgorithm != e.CompressionAlgorithm {
		t.Errorf("version/tool/algorithm = %q/%q/%q, want %q/%q/%q", z.Version, z.BuildToolIdentifier,
			z.CompressionAlgorithm, e.Version, e.BuildToolIdentifier, e.CompressionAlgorithm)
	}
	if z.CompressedArchiveSize != e.CompressedArchiveSize || z.UncompressedArchiveSize != e.UncompressedArchiveSize {
		t.Errorf("archive sizes = %d/%d, want %d/%d", z.CompressedArchiveSize, z.UncompressedArchiveSize,
			e.CompressedArchiveSize, e.UncompressedArchiveSize)
	}
	if int32(z.MaxSpanID) != e.MaxSpanID {
		t.Errorf("max span id = %d, want %d", z.MaxSpanID, e.MaxSpanID)
	}
	checkCheckpoints(t, z, e)
	if len(z.SpanDigests) != len(e.SpanDigests) {
		t.Errorf("%d span digests, want %d", len(z.SpanDigests), len(e.SpanDigests))
	}
	for i := range min(len(z.SpanDigests), len(e.SpanDigests)) {
		if string(z.SpanDigests[i]) != e.SpanDigests[i] {
			t.Errorf("span %d digest %s, want %s", i, z.SpanDigests[i], e.SpanDigests[i])
		}
	}
	checkTOC(t, z.TOC, e.TOC)
}

func checkCheckpoints(t *testing.T, z *Ztoc, e ztoctest.Expect) {
	t.Helper()
	if e.CompressionAlgorithm != CompressionGzip {
		if z.Tar == nil || z.Tar.SpanSize != e.SpanSize || z.Tar.Size != e.CompressedArchiveSize || z.Tar.Version != 2 {
			t.Errorf("tar zinfo = %+v, want span size %d, size %d", z.Tar, e.SpanSize, e.CompressedArchiveSize)
		}
		return
	}
	if z.Gzip == nil || z.Gzip.SpanSize != e.SpanSize {
		t.Fatalf("gzip zinfo = %+v, want span size %d", z.Gzip, e.SpanSize)
	}
	cps := z.Gzip.Checkpoints
	if len(cps) != len(e.Checkpoints) {
		t.Errorf("%d checkpoints, want %d", len(cps), len(e.Checkpoints))
	}
	for i := range min(len(cps), len(e.Checkpoints)) {
		c, w := cps[i], e.Checkpoints[i]
		sum := sha256.Sum256(c.Window)
		if c.In != w.In || c.Out != w.Out || c.Bits != w.Bits || hex.EncodeToString(sum[:]) != w.WindowSHA256 {
			t.Errorf("checkpoint %d = (%d,%d,%d,%x), want (%d,%d,%d,%s)", i, c.In, c.Out, c.Bits, sum[:4],
				w.In, w.Out, w.Bits, w.WindowSHA256[:8])
		}
	}
}

func checkTOC(t *testing.T, toc []FileMetadata, want []ztoctest.ExpectEntry) {
	t.Helper()
	if len(toc) != len(want) {
		t.Errorf("%d TOC entries, want %d", len(toc), len(want))
	}
	for i := range min(len(toc), len(want)) {
		if got := expectEntry(&toc[i]); !sameEntry(got, want[i]) {
			t.Errorf("TOC entry %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
}

// expectEntry renders an entry the way the expect.json files do.
func expectEntry(m *FileMetadata) ztoctest.ExpectEntry {
	mt, _ := m.ModTime.MarshalText()
	return ztoctest.ExpectEntry{
		Name: m.Name, Type: m.Type, UncompressedOffset: m.UncompressedOffset,
		UncompressedSize: m.UncompressedSize, Linkname: m.Linkname, Mode: m.Mode,
		UID: m.UID, GID: m.GID, Uname: m.Uname, Gname: m.Gname, ModTime: string(mt),
		Devmajor: m.Devmajor, Devminor: m.Devminor, PAXRecords: m.PAXRecords,
	}
}

func sameEntry(a, b ztoctest.ExpectEntry) bool {
	pa, pb := a.PAXRecords, b.PAXRecords
	a.PAXRecords, b.PAXRecords, b.ContentSHA256 = nil, nil, ""
	return reflect.DeepEqual(a, b) && maps.Equal(pa, pb)
}

// TestBuildModTimeUTC checks that mod times do not depend on the local zone.
func TestBuildModTimeUTC(t *testing.T) {
	f := ztoctest.Lookup(t, "plain.tar")
	z := buildFixture(t, f)
	for _, m := range z.TOC {
		if m.ModTime.Location() != time.UTC {
			t.Fatalf("%s: mod time in %v, want UTC", m.Name, m.ModTime.Location())
		}
	}
}

// TestBuildStreamsOnce checks Build works from a plain io.Reader (no
// seeking, no ReaderAt) and does not read the blob twice.
func TestBuildStreamsOnce(t *testing.T) {
	f := ztoctest.Lookup(t, "plain.tar")
	blob := f.Layer(t)
	cr := &countingReader{r: bytes.NewReader(blob)}
	if _, err := Build(context.Background(), struct{ *countingReader }{cr}, BuildOptions{SpanSize: f.Expect.SpanSize}); err != nil {
		t.Fatal(err)
	}
	if cr.n != int64(len(blob)) {
		t.Fatalf("read %d bytes of a %d-byte blob", cr.n, len(blob))
	}
}
