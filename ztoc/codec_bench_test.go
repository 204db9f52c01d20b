package ztoc

import (
	"fmt"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/fbs"
)

// benchZtoc makes a gzip zTOC model of n entries shaped like a real layer:
// directories every 50 files, mostly small regular files, some symlinks and
// hardlinks, PAX records on one entry in 100, 16 spans.
func benchZtoc(n int) *Ztoc {
	mt := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	toc := make([]FileMetadata, 0, n)
	var off int64
	for i := range n {
		m := FileMetadata{Mode: 0o644, ModTime: mt, Uname: "root", Gname: "root"}
		dir := fmt.Sprintf("usr/lib/pkg%04d/", i/50)
		switch {
		case i%50 == 0:
			m.Name, m.Type, m.Mode = dir, TypeDir, 0o755
		case i%50 == 49:
			m.Name, m.Type, m.Linkname = dir+"hard", TypeHardlink, toc[len(toc)-1].Name
		case i%20 == 0:
			m.Name, m.Type, m.Linkname = fmt.Sprintf("%slink%05d", dir, i), TypeSymlink, "../target"
		default:
			m.Name, m.Type, m.UncompressedSize = fmt.Sprintf("%sfile%05d.so", dir, i), TypeReg, int64(1000+i%7000)
		}
		if i%100 == 7 {
			m.PAXRecords = map[string]string{"SCHILY.xattr.user.k": "value", "mtime": "1709528767.5"}
		}
		m.UncompressedOffset = off + 512
		off = layoutAlign(m.UncompressedOffset + m.UncompressedSize)
		toc = append(toc, m)
	}
	size := off + 1024
	const spans = 16
	z := &Ztoc{
		Version: Version, BuildToolIdentifier: DefaultBuildToolIdentifier,
		CompressedArchiveSize: size / 3, UncompressedArchiveSize: size,
		CompressionAlgorithm: CompressionGzip, MaxSpanID: spans - 1, TOC: toc,
		Gzip: &GzipZinfo{SpanSize: size / spans},
	}
	for i := range spans {
		z.SpanDigests = append(z.SpanDigests, digest.FromString(fmt.Sprint(i)))
		z.Gzip.Checkpoints = append(z.Gzip.Checkpoints, Checkpoint{
			In: 10 + int64(i)*(size/3/spans), Out: int64(i) * (size / spans), Window: make([]byte, WindowSize),
		})
	}
	return z
}

// BenchmarkUnmarshal100k measures decoding (with every check and Validate)
// of a zTOC with 100 000 entries. Baseline, measured in the same loop: the
// same entries read into the same model through the flatbuffers runtime's
// unchecked accessors, as generated code does. Reported: ns/entry of both
// and their ratio (checked/unchecked).
func BenchmarkUnmarshal100k(b *testing.B) {
	const n = 100000
	buf, err := Marshal(benchZtoc(n))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	var ours, base time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := Unmarshal(buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if got := len(uncheckedTOC(buf)); got != n {
			b.Fatalf("baseline decoded %d entries", got)
		}
		ours, base = ours+t1.Sub(t0), base+time.Since(t1)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) / n }
	b.ReportMetric(per(ours), "ns/entry")
	b.ReportMetric(per(base), "baseline-ns/entry")
	b.ReportMetric(per(ours)/per(base), "x-baseline")
}

// uncheckedTOC decodes the TOC with the flatbuffers runtime, trusting every
// offset (what generated accessors do). Only for the baseline.
func uncheckedTOC(buf []byte) []FileMetadata {
	root := flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}
	toc := flatbuffers.Table{Bytes: buf, Pos: root.Indirect(root.Pos + flatbuffers.UOffsetT(root.Offset(slotVOffset(fbs.ZtocTOC))))}
	o := flatbuffers.UOffsetT(toc.Offset(slotVOffset(fbs.TOCMetadata)))
	vec, l := toc.Vector(o), toc.VectorLen(o)
	out := make([]FileMetadata, l)
	for i := range out {
		e := flatbuffers.Table{Bytes: buf, Pos: toc.Indirect(vec + flatbuffers.UOffsetT(4*i))}
		str := func(slot int) []byte {
			if o := e.Offset(slotVOffset(slot)); o != 0 {
				return e.ByteVector(e.Pos + flatbuffers.UOffsetT(o))
			}
			return nil
		}
		i64 := func(slot int) int64 {
			if o := e.Offset(slotVOffset(slot)); o != 0 {
				return e.GetInt64(e.Pos + flatbuffers.UOffsetT(o))
			}
			return 0
		}
		m := &out[i]
		m.Name, m.Type, m.Linkname = string(str(fbs.FileMetadataName)), string(str(fbs.FileMetadataType)), string(str(fbs.FileMetadataLinkname))
		m.Uname, m.Gname = string(str(fbs.FileMetadataUname)), string(str(fbs.FileMetadataGname))
		m.ModTime = parseModTime(str(fbs.FileMetadataModTime))
		m.UncompressedOffset, m.UncompressedSize = i64(fbs.FileMetadataUncompressedOffset), i64(fbs.FileMetadataUncompressedSize)
		m.Mode, m.Devmajor, m.Devminor = i64(fbs.FileMetadataMode), i64(fbs.FileMetadataDevmajor), i64(fbs.FileMetadataDevminor)
		if o := e.Offset(slotVOffset(fbs.FileMetadataUID)); o != 0 {
			m.UID = e.GetUint32(e.Pos + flatbuffers.UOffsetT(o))
		}
		if o := e.Offset(slotVOffset(fbs.FileMetadataGID)); o != 0 {
			m.GID = e.GetUint32(e.Pos + flatbuffers.UOffsetT(o))
		}
		if o := e.Offset(slotVOffset(fbs.FileMetadataXattrs)); o != 0 {
			xv, xl := e.Vector(flatbuffers.UOffsetT(o)), e.VectorLen(flatbuffers.UOffsetT(o))
			m.PAXRecords = make(map[string]string, xl)
			for j := range xl {
				x := flatbuffers.Table{Bytes: buf, Pos: e.Indirect(xv + flatbuffers.UOffsetT(4*j))}
				k := x.ByteVector(x.Pos + flatbuffers.UOffsetT(x.Offset(slotVOffset(fbs.XattrKey))))
				v := x.ByteVector(x.Pos + flatbuffers.UOffsetT(x.Offset(slotVOffset(fbs.XattrValue))))
				m.PAXRecords[string(k)] = string(v)
			}
		}
	}
	return out
}

func slotVOffset(slot int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*slot) }

// BenchmarkMarshal100k measures encoding the same zTOC; baseline: Unmarshal
// of its output in the same loop. Reported: ns/entry and the ratio.
func BenchmarkMarshal100k(b *testing.B) {
	const n = 100000
	z := benchZtoc(n)
	var enc, dec time.Duration
	for b.Loop() {
		t0 := time.Now()
		buf, err := Marshal(z)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := Unmarshal(buf); err != nil {
			b.Fatal(err)
		}
		enc, dec = enc+t1.Sub(t0), dec+time.Since(t1)
	}
	b.ReportMetric(float64(enc.Nanoseconds())/float64(b.N)/n, "ns/entry")
	b.ReportMetric(float64(enc)/float64(dec), "x-unmarshal")
}
