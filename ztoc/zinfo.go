package ztoc

import (
	"encoding/binary"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ociseek/ociseek/ztoc/fbs"
)

// The gzip "zinfo" blob (as in the AWS soci-snapshotter): little-endian, packed,
//
//	int32 N, int64 span_size, then records of {int64 in, int64 out,
//	uint8 bits, WindowSize bytes of window}
//
// with N records (v2) or N-1 records (v1, checkpoint 0 implied).
const (
	zinfoHeaderSize = 4 + 8
	zinfoRecordSize = 8 + 8 + 1 + WindowSize
)

// legacyFirstIn is the compressed offset of the checkpoint a v1 blob omits:
// right after a minimal 10-byte gzip header.
const legacyFirstIn = 10

// unmarshalGzipZinfo decodes a gzip zinfo blob of either version, telling
// them apart by length. Windows are copied into one allocation of their
// own: aliasing blob would keep the whole zTOC blob (TOC included, several
// MiB for a large layer) alive for as long as the layer is mounted. The
// implied v1 checkpoint 0 gets a zero window.
func unmarshalGzipZinfo(blob []byte) (*GzipZinfo, error) {
	if len(blob) < zinfoHeaderSize {
		return nil, fmt.Errorf("%w: gzip zinfo of %d bytes is shorter than its header", ErrInvalid, len(blob))
	}
	n := int64(int32(binary.LittleEndian.Uint32(blob)))
	spanSize := int64(binary.LittleEndian.Uint64(blob[4:]))
	if n < 1 {
		return nil, fmt.Errorf("%w: gzip zinfo declares %d checkpoints", ErrInvalid, n)
	}
	body := int64(len(blob) - zinfoHeaderSize)
	var stored int64
	switch body {
	case n * zinfoRecordSize:
		stored = n
	case (n - 1) * zinfoRecordSize:
		stored = n - 1
	default:
		return nil, fmt.Errorf("%w: gzip zinfo of %d bytes does not hold %d checkpoints", ErrInvalid, len(blob), n)
	}
	// n is now bounded by len(blob)/zinfoRecordSize+1.
	z := &GzipZinfo{SpanSize: spanSize, Checkpoints: make([]Checkpoint, 0, n), Legacy: stored < n}
	windows := make([]byte, n*WindowSize)
	window := func(i int64) []byte { return windows[i*WindowSize : (i+1)*WindowSize : (i+1)*WindowSize] }
	if z.Legacy {
		z.Checkpoints = append(z.Checkpoints, Checkpoint{In: legacyFirstIn, Window: window(n - 1)})
	}
	for i := int64(0); i < stored; i++ {
		r := blob[zinfoHeaderSize+i*zinfoRecordSize:]
		w := window(i)
		copy(w, r[17:17+WindowSize])
		z.Checkpoints = append(z.Checkpoints, Checkpoint{
			In:     int64(binary.LittleEndian.Uint64(r)),
			Out:    int64(binary.LittleEndian.Uint64(r[8:])),
			Bits:   r[16],
			Window: w,
		})
	}
	return z, nil
}

// marshalGzipZinfo encodes g in the version it came in: v2 normally, v1 when
// g.Legacy (checkpoint 0 must then be the implied one).
func marshalGzipZinfo(g *GzipZinfo) ([]byte, error) {
	cps := g.Checkpoints
	if len(cps) == 0 || int64(len(cps)) > (MaxSize-zinfoHeaderSize)/zinfoRecordSize {
		return nil, fmt.Errorf("%w: cannot encode %d gzip checkpoints", ErrInvalid, len(cps))
	}
	n := len(cps)
	if g.Legacy {
		if c := cps[0]; c.In != legacyFirstIn || c.Out != 0 || c.Bits != 0 || !allZero(c.Window) {
			return nil, fmt.Errorf("%w: legacy gzip zinfo needs checkpoint 0 at in=%d out=0 with a zero window", ErrInvalid, legacyFirstIn)
		}
		cps = cps[1:]
	}
	out := make([]byte, zinfoHeaderSize+len(cps)*zinfoRecordSize)
	binary.LittleEndian.PutUint32(out, uint32(int32(n)))
	binary.LittleEndian.PutUint64(out[4:], uint64(g.SpanSize))
	for i, c := range cps {
		if len(c.Window) != WindowSize {
			return nil, fmt.Errorf("%w: checkpoint %d window is %d bytes, want %d", ErrInvalid, i, len(c.Window), WindowSize)
		}
		r := out[zinfoHeaderSize+i*zinfoRecordSize:]
		binary.LittleEndian.PutUint64(r, uint64(c.In))
		binary.LittleEndian.PutUint64(r[8:], uint64(c.Out))
		r[16] = c.Bits
		copy(r[17:], c.Window)
	}
	return out, nil
}

func allZero(b []byte) bool {
	if len(b) != WindowSize {
		return false
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// unmarshalTarZinfo decodes the TarZinfo flatbuffer of an uncompressed
// layer (as in the AWS soci-snapshotter).
func unmarshalTarZinfo(blob []byte) (*TarZinfo, error) {
	d := fbs.NewDecoder(blob)
	t := d.Root("tar zinfo")
	z := &TarZinfo{
		Version:  t.Int32(fbs.TarZinfoVersion, 0),
		SpanSize: t.Int64(fbs.TarZinfoSpanSize, 0),
		Size:     t.Int64(fbs.TarZinfoSize, 0),
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: decode tar zinfo: %w", ErrInvalid, err)
	}
	return z, nil
}

// marshalTarZinfo encodes t as the reference does: fields added in schema
// order, defaults (0) omitted.
func marshalTarZinfo(t *TarZinfo) []byte {
	b := flatbuffers.NewBuilder(64)
	b.StartObject(fbs.TarZinfoNumFields)
	b.PrependInt32Slot(fbs.TarZinfoVersion, t.Version, 0)
	b.PrependInt64Slot(fbs.TarZinfoSpanSize, t.SpanSize, 0)
	b.PrependInt64Slot(fbs.TarZinfoSize, t.Size, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}
