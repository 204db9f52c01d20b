// Package ztoc owns the zTOC: the table of contents of a layer's tar archive
// together with the decompressor checkpoints that let any byte range of the
// layer be read by fetching and inflating only the spans that hold it.
//
// The wire format is a FlatBuffers buffer compatible with the one written by
// the AWS SOCI tooling (schema: ztoc/fbs/ztoc.fbs of github.com/awslabs/soci-snapshotter). This
// package holds the model (this file), the codec, the span geometry, the
// builder that makes a zTOC from a layer blob, and the reader that serves byte
// ranges of files through spans.
//
// Hazards: a zTOC comes off the network and is hostile until proven otherwise.
// Decoding checks every offset, length and count against the buffer and
// against each other; nothing is allocated from a size the buffer declares
// before that size has been bounded by the buffer's own length.
package ztoc

import (
	"errors"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Version is the only zTOC version string the reference tooling writes.
const Version = "0.9"

// DefaultBuildToolIdentifier is written into zTOCs built by ociseek. It is
// the reference tool's own identifier so that indices built by ociseek are
// byte-identical to the reference's for the same layers.
const DefaultBuildToolIdentifier = "AWS SOCI CLI v0.2"

// DefaultSpanSize is the span size (uncompressed bytes) used when none is
// given, as in the reference tooling.
const DefaultSpanSize int64 = 4 << 20

// WindowSize is the size of a deflate history window stored in a checkpoint.
const WindowSize = 32 << 10

// Compression algorithms as the zTOC names them (lower-cased enum names).
const (
	CompressionGzip         = "gzip"
	CompressionUncompressed = "uncompressed"
)

// Entry types stored in FileMetadata.Type.
const (
	TypeReg      = "reg"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// PAXXattrPrefix marks the PAX records that carry extended attributes.
const PAXXattrPrefix = "SCHILY.xattr."

// ErrUnindexable reports a layer whose compression cannot be indexed (zstd,
// encrypted, unknown). Callers test for it with errors.Is and fetch such
// layers whole instead.
var ErrUnindexable = errors.New("layer cannot be indexed")

// ErrInvalid reports a zTOC (or a part of one) that is malformed or
// inconsistent. Every decoding and validation error wraps it.
var ErrInvalid = errors.New("invalid ztoc")

// ErrSpanDigest reports span bytes whose sha256 differs from the zTOC's.
var ErrSpanDigest = errors.New("span digest mismatch")

// SpanID numbers the spans of a layer from 0.
type SpanID int32

// Ztoc is a decoded zTOC.
type Ztoc struct {
	// Version is the format version string, "0.9" for every known writer.
	Version string
	// BuildToolIdentifier names the tool that built the zTOC.
	BuildToolIdentifier string
	// CompressedArchiveSize is the byte size of the layer blob.
	CompressedArchiveSize int64
	// UncompressedArchiveSize is the number of tar bytes up to and including
	// the end-of-archive blocks; the end of the last span.
	UncompressedArchiveSize int64
	// TOC lists every tar entry in archive order.
	TOC []FileMetadata
	// CompressionAlgorithm is CompressionGzip or CompressionUncompressed.
	CompressionAlgorithm string
	// MaxSpanID is the number of spans minus one.
	MaxSpanID SpanID
	// SpanDigests holds the sha256 of each span's compressed bytes.
	SpanDigests []digest.Digest
	// Gzip holds the checkpoints of a gzip layer; nil for uncompressed.
	Gzip *GzipZinfo
	// Tar holds the geometry of an uncompressed layer; nil for gzip.
	Tar *TarZinfo
	// Digest is the sha256 of the flatbuffer the zTOC was decoded from, set
	// by Unmarshal; empty for a zTOC built in memory. Caches key derived
	// data by it, so that two zTOCs of one layer never share entries.
	Digest digest.Digest
}

// FileMetadata is one tar entry of the TOC, with its fields as stored.
type FileMetadata struct {
	// Name is the raw tar name (directories keep their trailing slash).
	Name string
	// Type is one of the Type* constants.
	Type string
	// UncompressedOffset is the offset of the entry's data in the tar.
	UncompressedOffset int64
	// UncompressedSize is the tar header's size field.
	UncompressedSize int64
	// Linkname is the target of a symlink or hardlink.
	Linkname string
	// Mode is the raw tar mode (permissions with setuid/setgid/sticky).
	Mode int64
	// UID and GID are the numeric owners.
	UID, GID uint32
	// Uname and Gname are the owner names.
	Uname, Gname string
	// ModTime is the modification time; the codec writes and reads it as
	// Go's time.Time text (RFC 3339 with nanoseconds when non-zero).
	ModTime time.Time
	// Devmajor and Devminor are the device numbers of char and block devices.
	Devmajor, Devminor int64
	// PAXRecords holds every PAX record of the entry (the zTOC's misnamed
	// "xattrs" field), e.g. "mtime", "path", "SCHILY.xattr.user.foo".
	PAXRecords map[string]string
}

// Xattrs returns the entry's extended attributes: the PAX records with the
// SCHILY.xattr. prefix, with the prefix stripped. It returns nil when there
// are none.
func (m *FileMetadata) Xattrs() map[string]string {
	var x map[string]string
	for k, v := range m.PAXRecords {
		if name, ok := strings.CutPrefix(k, PAXXattrPrefix); ok && name != "" {
			if x == nil {
				x = make(map[string]string)
			}
			x[name] = v
		}
	}
	return x
}

// Checkpoint is a point in a gzip stream where inflating can resume.
type Checkpoint struct {
	// In is the compressed offset of the first full byte after the
	// checkpoint.
	In int64
	// Out is the uncompressed offset of the checkpoint.
	Out int64
	// Bits is the number (0..7) of not-yet-consumed bits in byte In-1; they
	// are its top Bits bits.
	Bits uint8
	// Window holds the WindowSize bytes of output preceding Out, oldest
	// first, zero-filled at the front when fewer exist.
	Window []byte
}

// GzipZinfo is the checkpoint table of a gzip layer.
type GzipZinfo struct {
	// SpanSize is the span size requested at build time.
	SpanSize int64
	// Checkpoints holds one checkpoint per span, strictly increasing in both
	// offsets; Checkpoints[0] sits right after the first gzip header.
	Checkpoints []Checkpoint
	// Legacy marks a v1 blob, which omits checkpoint 0 on the wire; it is
	// kept so re-encoding reproduces the original bytes.
	Legacy bool
}

// TarZinfo is the span geometry of an uncompressed layer.
type TarZinfo struct {
	// Version is the TarZinfo version written, 2.
	Version int32
	// SpanSize is the span size.
	SpanSize int64
	// Size is the size of the layer blob.
	Size int64
}
