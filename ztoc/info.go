package ztoc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"

	"github.com/opencontainers/go-digest"
)

// Info is the document `ociseek ztoc info --json` prints: what a zTOC says,
// with the field names and value formats of the reference fixtures'
// *.expect.json files. It leaves out what the zTOC alone cannot tell: file
// contents, and the layer's digest and media type unless the caller fills
// them in from the index descriptor.
type Info struct {
	// LayerDigest is the digest of the layer the zTOC indexes, when known.
	LayerDigest string `json:"layer_digest,omitempty"`
	// LayerMediaType is that layer's media type, when known.
	LayerMediaType string `json:"layer_media_type,omitempty"`
	// SpanSize is the span size the zTOC was built with.
	SpanSize int64 `json:"span_size"`
	// ZtocDigest is the sha256 of the zTOC bytes.
	ZtocDigest string `json:"ztoc_digest"`
	// ZtocSize is the zTOC's length in bytes.
	ZtocSize int64 `json:"ztoc_size"`
	// Version is the zTOC format version string.
	Version string `json:"version"`
	// BuildToolIdentifier names the tool that built the zTOC.
	BuildToolIdentifier string `json:"build_tool_identifier"`
	// CompressionAlgorithm is "gzip" or "uncompressed".
	CompressionAlgorithm string `json:"compression_algorithm"`
	// CompressedArchiveSize is the layer blob's size.
	CompressedArchiveSize int64 `json:"compressed_archive_size"`
	// UncompressedArchiveSize is the tar's size.
	UncompressedArchiveSize int64 `json:"uncompressed_archive_size"`
	// MaxSpanID is the number of spans minus one.
	MaxSpanID int32 `json:"max_span_id"`
	// Checkpoints lists the gzip checkpoints (absent for uncompressed).
	Checkpoints []InfoCheckpoint `json:"checkpoints,omitempty"`
	// SpanDigests lists the span digests in span order.
	SpanDigests []string `json:"span_digests"`
	// TOC lists the entries in archive order.
	TOC []InfoEntry `json:"toc"`
}

// InfoCheckpoint is a gzip checkpoint with its window shown by its sha256.
type InfoCheckpoint struct {
	In           int64  `json:"in"`
	Out          int64  `json:"out"`
	Bits         uint8  `json:"bits"`
	WindowSHA256 string `json:"window_sha256"`
}

// InfoEntry is a TOC entry with its fields as stored; empty strings, zero
// device numbers and empty PAX records are left out.
type InfoEntry struct {
	Name               string            `json:"name"`
	Type               string            `json:"type"`
	UncompressedOffset int64             `json:"uncompressed_offset"`
	UncompressedSize   int64             `json:"uncompressed_size"`
	Linkname           string            `json:"linkname,omitempty"`
	Mode               int64             `json:"mode"`
	UID                uint32            `json:"uid"`
	GID                uint32            `json:"gid"`
	Uname              string            `json:"uname,omitempty"`
	Gname              string            `json:"gname,omitempty"`
	ModTime            string            `json:"mod_time"`
	Devmajor           int64             `json:"devmajor,omitempty"`
	Devminor           int64             `json:"devminor,omitempty"`
	PAXRecords         map[string]string `json:"pax_records,omitempty"`
}

// Info describes z, which was decoded from (or encoded to) ztocBytes; the
// bytes give the digest and size.
func (z *Ztoc) Info(ztocBytes []byte) *Info {
	info := &Info{
		ZtocDigest:              digest.FromBytes(ztocBytes).String(),
		ZtocSize:                int64(len(ztocBytes)),
		Version:                 z.Version,
		BuildToolIdentifier:     z.BuildToolIdentifier,
		CompressionAlgorithm:    z.CompressionAlgorithm,
		CompressedArchiveSize:   z.CompressedArchiveSize,
		UncompressedArchiveSize: z.UncompressedArchiveSize,
		MaxSpanID:               int32(z.MaxSpanID),
		SpanDigests:             make([]string, len(z.SpanDigests)),
		TOC:                     make([]InfoEntry, len(z.TOC)),
	}
	for i, d := range z.SpanDigests {
		info.SpanDigests[i] = d.String()
	}
	if z.Tar != nil {
		info.SpanSize = z.Tar.SpanSize
	}
	if z.Gzip != nil {
		info.SpanSize = z.Gzip.SpanSize
		info.Checkpoints = make([]InfoCheckpoint, len(z.Gzip.Checkpoints))
		for i, c := range z.Gzip.Checkpoints {
			sum := sha256.Sum256(c.Window)
			info.Checkpoints[i] = InfoCheckpoint{In: c.In, Out: c.Out, Bits: c.Bits, WindowSHA256: hex.EncodeToString(sum[:])}
		}
	}
	for i := range z.TOC {
		m := &z.TOC[i]
		mt, _ := m.ModTime.MarshalText() // as the codec writes it
		info.TOC[i] = InfoEntry{
			Name: m.Name, Type: m.Type,
			UncompressedOffset: m.UncompressedOffset, UncompressedSize: m.UncompressedSize,
			Linkname: m.Linkname, Mode: m.Mode, UID: m.UID, GID: m.GID,
			Uname: m.Uname, Gname: m.Gname, ModTime: string(mt),
			Devmajor: m.Devmajor, Devminor: m.Devminor, PAXRecords: m.PAXRecords,
		}
	}
	return info
}

// WriteJSON writes the document as the reference fixtures' expect.json files
// are written: two-space indentation, no HTML escaping, a final newline.
func (i *Info) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(i)
}
