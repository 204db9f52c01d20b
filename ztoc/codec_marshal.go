package ztoc

import (
	"fmt"
	"slices"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ociseek/ociseek/ztoc/fbs"
)

// Marshal encodes z as a zTOC flatbuffer. For a zTOC the reference tooling
// built, Marshal(Unmarshal(b)) reproduces b byte for byte: a FlatBuffer's
// bytes depend on the order objects are created in, and this follows the
// reference's order (as in the AWS soci-snapshotter). z is validated first, so
// Marshal never writes a zTOC that Unmarshal would refuse.
func Marshal(z *Ztoc) ([]byte, error) {
	if err := z.Validate(); err != nil {
		return nil, fmt.Errorf("marshal ztoc: %w", err)
	}
	return encode(z)
}

// encode writes z without validating it first (tests use it to make
// buffers that are well-formed but say something invalid). It still
// refuses what it cannot write.
func encode(z *Ztoc) ([]byte, error) {
	if n := estimateSize(z); n > MaxSize {
		return nil, fmt.Errorf("marshal ztoc: %w: about %d bytes exceeds the %d byte limit", ErrInvalid, n, MaxSize)
	}
	alg, ok := algorithmEnum(z.CompressionAlgorithm)
	if !ok {
		return nil, fmt.Errorf("marshal ztoc: %w: unknown compression algorithm %q", ErrInvalid, z.CompressionAlgorithm)
	}
	blob, err := zinfoBlob(z)
	if err != nil {
		return nil, fmt.Errorf("marshal ztoc: %w", err)
	}
	b := flatbuffers.NewBuilder(len(blob) + 256*len(z.TOC) + 1024)
	version := b.CreateString(z.Version)
	buildTool := b.CreateString(z.BuildToolIdentifier)
	toc := encodeTOC(b, z.TOC)
	ci := encodeCompressionInfo(b, z, alg, blob)

	b.StartObject(fbs.ZtocNumFields)
	b.PrependUOffsetTSlot(fbs.ZtocVersion, version, 0)
	b.PrependUOffsetTSlot(fbs.ZtocBuildToolIdentifier, buildTool, 0)
	b.PrependUOffsetTSlot(fbs.ZtocTOC, toc, 0)
	b.PrependInt64Slot(fbs.ZtocCompressedArchiveSize, z.CompressedArchiveSize, 0)
	b.PrependInt64Slot(fbs.ZtocUncompressedArchiveSize, z.UncompressedArchiveSize, 0)
	b.PrependUOffsetTSlot(fbs.ZtocCompressionInfo, ci, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes(), nil
}

// estimateSize bounds the encoded size from above closely enough to refuse
// a model the builder could not hold (its offsets are 32-bit).
func estimateSize(z *Ztoc) int64 {
	n := int64(1024) + int64(len(z.SpanDigests)*(8+len(spanDigestPrefix)+128))
	if z.Gzip != nil {
		n += int64(len(z.Gzip.Checkpoints)) * zinfoRecordSize
	}
	for i := range z.TOC {
		m := &z.TOC[i]
		n += 256 + int64(len(m.Name)+len(m.Linkname)+len(m.Uname)+len(m.Gname))
		for k, v := range m.PAXRecords {
			n += 48 + int64(len(k)+len(v))
		}
	}
	return n
}

const spanDigestPrefix = "sha256:"

// zinfoBlob encodes the checkpoints blob for z's algorithm.
func zinfoBlob(z *Ztoc) ([]byte, error) {
	switch {
	case z.Tar != nil:
		return marshalTarZinfo(z.Tar), nil
	case z.Gzip != nil:
		return marshalGzipZinfo(z.Gzip)
	}
	return nil, fmt.Errorf("%w: no checkpoints", ErrInvalid)
}

// encodeTOC writes the entries last to first, then the vector (in TOC
// order) and the TOC table.
func encodeTOC(b *flatbuffers.Builder, toc []FileMetadata) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(toc))
	var keys []string
	var xoffs []flatbuffers.UOffsetT
	for i := len(toc) - 1; i >= 0; i-- {
		offs[i], keys, xoffs = encodeEntry(b, &toc[i], keys, xoffs)
	}
	meta := offsetVector(b, offs)
	b.StartObject(fbs.TOCNumFields)
	b.PrependUOffsetTSlot(fbs.TOCMetadata, meta, 0)
	return b.EndObject()
}

// encodeEntry writes one FileMetadata table with its strings and PAX
// records; keys and xoffs are scratch slices reused across entries.
func encodeEntry(b *flatbuffers.Builder, m *FileMetadata, keys []string, xoffs []flatbuffers.UOffsetT) (flatbuffers.UOffsetT, []string, []flatbuffers.UOffsetT) {
	name := b.CreateString(m.Name)
	typ := b.CreateString(m.Type)
	linkname := b.CreateString(m.Linkname)
	uname := b.CreateString(m.Uname)
	gname := b.CreateString(m.Gname)
	mt, _ := m.ModTime.MarshalText() // Validate refused years MarshalText cannot write.
	modTime := b.CreateByteString(mt)

	keys = keys[:0]
	for k := range m.PAXRecords {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	xoffs = xoffs[:0]
	for _, k := range keys {
		ko := b.CreateString(k)
		vo := b.CreateString(m.PAXRecords[k])
		b.StartObject(fbs.XattrNumFields)
		b.PrependUOffsetTSlot(fbs.XattrKey, ko, 0)
		b.PrependUOffsetTSlot(fbs.XattrValue, vo, 0)
		xoffs = append(xoffs, b.EndObject())
	}
	xattrs := offsetVector(b, xoffs)

	b.StartObject(fbs.FileMetadataNumFields)
	b.PrependUOffsetTSlot(fbs.FileMetadataName, name, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataType, typ, 0)
	b.PrependInt64Slot(fbs.FileMetadataUncompressedOffset, m.UncompressedOffset, 0)
	b.PrependInt64Slot(fbs.FileMetadataUncompressedSize, m.UncompressedSize, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataLinkname, linkname, 0)
	b.PrependInt64Slot(fbs.FileMetadataMode, m.Mode, 0)
	b.PrependUint32Slot(fbs.FileMetadataUID, m.UID, 0)
	b.PrependUint32Slot(fbs.FileMetadataGID, m.GID, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataUname, uname, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataGname, gname, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataModTime, modTime, 0)
	b.PrependInt64Slot(fbs.FileMetadataDevmajor, m.Devmajor, 0)
	b.PrependInt64Slot(fbs.FileMetadataDevminor, m.Devminor, 0)
	b.PrependUOffsetTSlot(fbs.FileMetadataXattrs, xattrs, 0)
	return b.EndObject(), keys, xoffs
}

// offsetVector writes a vector of offsets in the given order.
func offsetVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(flatbuffers.SizeUOffsetT, len(offs), flatbuffers.SizeUOffsetT)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// encodeCompressionInfo writes the checkpoints blob, the span digests and
// the CompressionInfo table.
func encodeCompressionInfo(b *flatbuffers.Builder, z *Ztoc, alg int8, blob []byte) flatbuffers.UOffsetT {
	cps := b.CreateByteVector(blob)
	digests := make([]flatbuffers.UOffsetT, len(z.SpanDigests))
	for i, d := range z.SpanDigests {
		digests[i] = b.CreateString(string(d))
	}
	dv := offsetVector(b, digests)
	b.StartObject(fbs.CompressionInfoNumFields)
	b.PrependInt32Slot(fbs.CompressionInfoMaxSpanID, int32(z.MaxSpanID), 0)
	b.PrependUOffsetTSlot(fbs.CompressionInfoSpanDigests, dv, 0)
	b.PrependUOffsetTSlot(fbs.CompressionInfoCheckpoints, cps, 0)
	b.PrependInt8Slot(fbs.CompressionInfoCompressionAlgorithm, alg, fbs.AlgorithmGzip)
	return b.EndObject()
}
