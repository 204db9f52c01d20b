package ztoc

import (
	"bytes"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/fbs"
)

// MaxSize is the largest zTOC buffer Unmarshal accepts. A zTOC costs about
// 32 KiB per span plus a few hundred bytes per file, so 1 GiB covers layers
// of hundreds of GiB; anything larger is refused before it is looked at.
const MaxSize = 1 << 30

// Unmarshal decodes and validates a zTOC flatbuffer. Every error wraps
// ErrInvalid. The returned checkpoint windows alias buf, which must
// therefore not be modified while the Ztoc is in use.
func Unmarshal(buf []byte) (*Ztoc, error) {
	return unmarshalLimit(buf, MaxSize)
}

// unmarshalLimit is Unmarshal with the size limit as a parameter, so tests
// need not allocate a gigabyte to check it.
func unmarshalLimit(buf []byte, limit int) (*Ztoc, error) {
	if len(buf) > limit {
		return nil, fmt.Errorf("%w: buffer of %d bytes exceeds the %d byte limit", ErrInvalid, len(buf), limit)
	}
	z, err := decode(buf)
	if err != nil {
		return nil, err
	}
	if err := z.Validate(); err != nil {
		return nil, err
	}
	z.Digest = digest.FromBytes(buf)
	return z, nil
}

// decode turns the buffer into the model without semantic checks.
func decode(buf []byte) (*Ztoc, error) {
	d := fbs.NewDecoder(buf)
	root := d.Root("ztoc")
	z := &Ztoc{
		Version:                 root.String(fbs.ZtocVersion),
		BuildToolIdentifier:     root.String(fbs.ZtocBuildToolIdentifier),
		CompressedArchiveSize:   root.Int64(fbs.ZtocCompressedArchiveSize, 0),
		UncompressedArchiveSize: root.Int64(fbs.ZtocUncompressedArchiveSize, 0),
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: decode root table: %w", ErrInvalid, err)
	}
	toc, err := decodeTOC(d, root.Table(fbs.ZtocTOC, "toc"))
	if err != nil {
		return nil, err
	}
	z.TOC = toc
	if err := decodeCompressionInfo(d, root.Table(fbs.ZtocCompressionInfo, "compression_info"), z); err != nil {
		return nil, err
	}
	return z, nil
}

// decodeTOC reads the metadata vector. Strings that repeat across entries
// (type, owner names) are interned so 100k entries do not cost 100k copies
// of "reg" and "root".
func decodeTOC(d *fbs.Decoder, toc fbs.Table) ([]FileMetadata, error) {
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: decode toc: %w", ErrInvalid, err)
	}
	if !toc.Valid() {
		return nil, fmt.Errorf("%w: toc table missing", ErrInvalid)
	}
	vec := toc.Vector(fbs.TOCMetadata, "entry")
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: decode toc: %w", ErrInvalid, err)
	}
	// The vector's length is bounded by the buffer (4 bytes per element).
	out := make([]FileMetadata, vec.Len())
	ed := &entryDecoder{d: d, in: interner{}}
	for i := range out {
		if err := ed.decode(vec.Table(i), &out[i]); err != nil {
			return nil, fmt.Errorf("%w: decode toc entry %d: %w", ErrInvalid, i, err)
		}
	}
	return out, nil
}

// entryDecoder decodes TOC entries, sharing what repeats between them.
type entryDecoder struct {
	d  *fbs.Decoder
	in interner
	// lastModTime caches the previous entry's mod_time text and value:
	// layers are usually built with one timestamp for most files.
	lastModTime     []byte
	lastModTimeTime time.Time
}

// interner returns one shared string per distinct byte content.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := string(b)
	in[s] = s
	return s
}

func (ed *entryDecoder) decode(t fbs.Table, m *FileMetadata) error {
	d, in := ed.d, ed.in
	if err := d.Err(); err != nil {
		return err
	}
	if !t.Valid() {
		return fmt.Errorf("entry is not a table")
	}
	m.Name = t.String(fbs.FileMetadataName)
	typ, _ := t.StringBytes(fbs.FileMetadataType)
	m.Type = in.get(typ)
	m.UncompressedOffset = t.Int64(fbs.FileMetadataUncompressedOffset, 0)
	m.UncompressedSize = t.Int64(fbs.FileMetadataUncompressedSize, 0)
	m.Linkname = t.String(fbs.FileMetadataLinkname)
	m.Mode = t.Int64(fbs.FileMetadataMode, 0)
	m.UID = t.Uint32(fbs.FileMetadataUID, 0)
	m.GID = t.Uint32(fbs.FileMetadataGID, 0)
	uname, _ := t.StringBytes(fbs.FileMetadataUname)
	m.Uname = in.get(uname)
	gname, _ := t.StringBytes(fbs.FileMetadataGname)
	m.Gname = in.get(gname)
	modTime, _ := t.StringBytes(fbs.FileMetadataModTime)
	if !bytes.Equal(modTime, ed.lastModTime) || ed.lastModTime == nil {
		ed.lastModTime, ed.lastModTimeTime = modTime, parseModTime(modTime)
	}
	m.ModTime = ed.lastModTimeTime
	m.Devmajor = t.Int64(fbs.FileMetadataDevmajor, 0)
	m.Devminor = t.Int64(fbs.FileMetadataDevminor, 0)
	if err := d.Err(); err != nil {
		return err
	}
	return decodePAX(d, t.Vector(fbs.FileMetadataXattrs, "xattr"), m)
}

// parseModTime reads Go's time.Time text as the reference writes it.
// Unparsable or empty text gives the zero time, as in the reference reader.
func parseModTime(b []byte) time.Time {
	var t time.Time
	if len(b) == 0 || t.UnmarshalText(b) != nil {
		return time.Time{}
	}
	return t
}

// decodePAX reads the (misnamed) xattrs vector: every PAX record.
func decodePAX(d *fbs.Decoder, vec fbs.Vector, m *FileMetadata) error {
	if err := d.Err(); err != nil {
		return err
	}
	if vec.Len() == 0 {
		return nil
	}
	m.PAXRecords = make(map[string]string, vec.Len())
	for i := 0; i < vec.Len(); i++ {
		x := vec.Table(i)
		k := x.String(fbs.XattrKey)
		v := x.String(fbs.XattrValue)
		if err := d.Err(); err != nil {
			return fmt.Errorf("pax record %d: %w", i, err)
		}
		if _, dup := m.PAXRecords[k]; dup {
			return fmt.Errorf("pax record %q appears twice", k)
		}
		m.PAXRecords[k] = v
	}
	return nil
}

// decodeCompressionInfo reads the algorithm, span digests and zinfo blob.
func decodeCompressionInfo(d *fbs.Decoder, ci fbs.Table, z *Ztoc) error {
	if err := d.Err(); err != nil {
		return fmt.Errorf("%w: decode compression info: %w", ErrInvalid, err)
	}
	if !ci.Valid() {
		return fmt.Errorf("%w: compression info table missing", ErrInvalid)
	}
	alg := ci.Int8(fbs.CompressionInfoCompressionAlgorithm, fbs.AlgorithmGzip)
	z.MaxSpanID = SpanID(ci.Int32(fbs.CompressionInfoMaxSpanID, 0))
	vec := ci.Vector(fbs.CompressionInfoSpanDigests, "span digest")
	if err := d.Err(); err != nil {
		return fmt.Errorf("%w: decode compression info: %w", ErrInvalid, err)
	}
	z.SpanDigests = make([]digest.Digest, vec.Len())
	for i := range z.SpanDigests {
		b, _ := vec.StringBytes(i)
		z.SpanDigests[i] = digest.Digest(b)
	}
	blob, _ := ci.Bytes(fbs.CompressionInfoCheckpoints)
	if err := d.Err(); err != nil {
		return fmt.Errorf("%w: decode compression info: %w", ErrInvalid, err)
	}
	var err error
	switch alg {
	case fbs.AlgorithmGzip:
		z.CompressionAlgorithm = CompressionGzip
		z.Gzip, err = unmarshalGzipZinfo(blob)
	case fbs.AlgorithmUncompressed:
		z.CompressionAlgorithm = CompressionUncompressed
		z.Tar, err = unmarshalTarZinfo(blob)
	default:
		return fmt.Errorf("%w: unknown compression algorithm %d", ErrInvalid, alg)
	}
	if err != nil {
		return fmt.Errorf("decode %s checkpoints: %w", z.CompressionAlgorithm, err)
	}
	return nil
}

// algorithmEnum maps the model's algorithm name to the schema enum.
func algorithmEnum(name string) (int8, bool) {
	switch name {
	case CompressionGzip:
		return fbs.AlgorithmGzip, true
	case CompressionUncompressed:
		return fbs.AlgorithmUncompressed, true
	}
	return 0, false
}
