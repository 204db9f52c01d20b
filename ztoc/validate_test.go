package ztoc

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// validGzipZtoc returns a small, valid gzip zTOC model: two spans, a
// directory, a file, a hardlink to it and a symlink.
func validGzipZtoc() *Ztoc {
	mt := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	return &Ztoc{
		Version:                 Version,
		BuildToolIdentifier:     DefaultBuildToolIdentifier,
		CompressedArchiveSize:   1000,
		UncompressedArchiveSize: 4096,
		CompressionAlgorithm:    CompressionGzip,
		MaxSpanID:               1,
		SpanDigests:             []digest.Digest{digest.FromString("span0"), digest.FromString("span1")},
		Gzip: &GzipZinfo{SpanSize: 2000, Checkpoints: []Checkpoint{
			{In: 10, Out: 0, Window: make([]byte, WindowSize)},
			{In: 500, Out: 2048, Bits: 3, Window: make([]byte, WindowSize)},
		}},
		TOC: []FileMetadata{
			{Name: "dir/", Type: TypeDir, UncompressedOffset: 512, Mode: 0o755, ModTime: mt},
			{Name: "dir/a", Type: TypeReg, UncompressedOffset: 1024, UncompressedSize: 600, Mode: 0o644, ModTime: mt,
				PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v", "mtime": "1709528767"}},
			{Name: "dir/b", Type: TypeHardlink, Linkname: "dir/a", UncompressedOffset: 2560, ModTime: mt},
			{Name: "dir/s", Type: TypeSymlink, Linkname: "../etc/x", UncompressedOffset: 3072, ModTime: mt},
		},
	}
}

// validTarZtoc returns a small, valid uncompressed zTOC model of 3 spans.
func validTarZtoc() *Ztoc {
	z := validGzipZtoc()
	z.CompressionAlgorithm = CompressionUncompressed
	z.Gzip = nil
	z.CompressedArchiveSize = 5000
	z.Tar = &TarZinfo{Version: 2, SpanSize: 2000, Size: 5000}
	z.MaxSpanID = 2
	z.SpanDigests = append(z.SpanDigests, digest.FromString("span2"))
	return z
}

func TestValidateAcceptsValid(t *testing.T) {
	for name, z := range map[string]*Ztoc{"gzip": validGzipZtoc(), "tar": validTarZtoc()} {
		if err := z.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// invalidCase mutates a valid model into one Validate must refuse; want is
// a fragment of the expected message.
type invalidCase struct {
	mutate func(z *Ztoc)
	want   string
}

// modelOnly names cases the wire format cannot carry (the encoded buffer
// says something else), so only Validate and Marshal are tried.
var modelOnly = map[string]bool{"BadYear": true}

var gzipInvalidCases = map[string]invalidCase{
	"OverlappingData":  {func(z *Ztoc) { z.TOC[1].UncompressedSize = 1600 }, "overlaps"},
	"DataOverHeader":   {func(z *Ztoc) { z.TOC[2].UncompressedOffset = 2048 }, "overlaps"},
	"SameOffset":       {func(z *Ztoc) { z.TOC[3].UncompressedOffset = 2560 }, "overlaps"},
	"FirstHeader":      {func(z *Ztoc) { z.TOC[0].UncompressedOffset = 100 }, "overlaps"},
	"DotDotName":       {func(z *Ztoc) { z.TOC[1].Name = "dir/../../etc/passwd" }, `".." element`},
	"DotDotOnly":       {func(z *Ztoc) { z.TOC[1].Name = ".." }, `".." element`},
	"AbsoluteName":     {func(z *Ztoc) { z.TOC[1].Name = "/etc/passwd" }, "absolute"},
	"NULName":          {func(z *Ztoc) { z.TOC[1].Name = "dir/a\x00b" }, "NUL"},
	"EmptyName":        {func(z *Ztoc) { z.TOC[1].Name = "" }, "empty name"},
	"UnknownType":      {func(z *Ztoc) { z.TOC[1].Type = "sparse" }, "unknown type"},
	"NegativeOffset":   {func(z *Ztoc) { z.TOC[0].UncompressedOffset = -512 }, "negative offset"},
	"NegativeSize":     {func(z *Ztoc) { z.TOC[1].UncompressedSize = -1 }, "negative"},
	"PastArchiveEnd":   {func(z *Ztoc) { z.TOC[3].UncompressedSize = 2000 }, "past the archive"},
	"HugeSize":         {func(z *Ztoc) { z.TOC[3].UncompressedSize = 1<<63 - 1 }, "past the archive"},
	"SymlinkNoTarget":  {func(z *Ztoc) { z.TOC[3].Linkname = "" }, "symlink target"},
	"HardlinkNoTarget": {func(z *Ztoc) { z.TOC[2].Linkname = "" }, "hardlink target"},
	"HardlinkMissing":  {func(z *Ztoc) { z.TOC[2].Linkname = "dir/zz" }, "not an earlier entry"},
	"HardlinkForward": {func(z *Ztoc) {
		z.TOC[2].Linkname = "dir/s"
	}, "not an earlier entry"},
	"HardlinkToSelf":    {func(z *Ztoc) { z.TOC[2].Linkname = "dir/b" }, "not an earlier entry"},
	"HardlinkToDir":     {func(z *Ztoc) { z.TOC[2].Linkname = "dir" }, "hardlink to directory"},
	"HardlinkDotDot":    {func(z *Ztoc) { z.TOC[2].Linkname = "../dir/a" }, `".." element`},
	"BadYear":           {func(z *Ztoc) { z.TOC[0].ModTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "year"},
	"NegativeDevice":    {func(z *Ztoc) { z.TOC[0].Devmajor = -1 }, "device"},
	"SpanCountMismatch": {func(z *Ztoc) { z.MaxSpanID = 2 }, "span digests for max span id"},
	"DigestCount":       {func(z *Ztoc) { z.SpanDigests = z.SpanDigests[:1] }, "span digests"},
	"NegativeMaxSpanID": {func(z *Ztoc) { z.MaxSpanID = -1; z.SpanDigests = nil }, "negative"},
	"BadDigestHex":      {func(z *Ztoc) { z.SpanDigests[1] = "sha256:xyz" }, "span digest 1"},
	"BadDigestNoAlg":    {func(z *Ztoc) { z.SpanDigests[0] = digest.Digest(strings.Repeat("a", 64)) }, "span digest 0"},
	"NonSHA256Digest": {func(z *Ztoc) { // sha512 is not linked in: Validate refuses it as unsupported
		z.SpanDigests[0] = digest.Digest("sha512:" + strings.Repeat("ab", 64))
	}, "span digest 0"},
	"CheckpointCount":      {func(z *Ztoc) { z.Gzip.Checkpoints = z.Gzip.Checkpoints[:1] }, "checkpoints for max span id"},
	"CheckpointInNotUp":    {func(z *Ztoc) { z.Gzip.Checkpoints[1].In = 10 }, "do not increase"},
	"CheckpointOutNotUp":   {func(z *Ztoc) { z.Gzip.Checkpoints[1].Out = 0 }, "do not increase"},
	"CheckpointZeroOut":    {func(z *Ztoc) { z.Gzip.Checkpoints[0].Out = 1 }, "checkpoint 0"},
	"CheckpointBits":       {func(z *Ztoc) { z.Gzip.Checkpoints[1].Bits = 8 }, "bits"},
	"CheckpointInZero":     {func(z *Ztoc) { z.Gzip.Checkpoints[0].In = 0 }, "compressed offset"},
	"CheckpointInPastEnd":  {func(z *Ztoc) { z.Gzip.Checkpoints[1].In = 1001 }, "compressed offset"},
	"CheckpointOutPastEnd": {func(z *Ztoc) { z.Gzip.Checkpoints[1].Out = 4097 }, "uncompressed offset"},
	"CheckpointWindow":     {func(z *Ztoc) { z.Gzip.Checkpoints[1].Window = make([]byte, 100) }, "window"},
	"NegativeSpanSize":     {func(z *Ztoc) { z.Gzip.SpanSize = -1 }, "span size"},
	"NegativeArchive":      {func(z *Ztoc) { z.CompressedArchiveSize = -1 }, "negative archive size"},
	"HugeArchive":          {func(z *Ztoc) { z.UncompressedArchiveSize = 1 << 62 }, "archive size"},
	"UnknownAlgorithm":     {func(z *Ztoc) { z.CompressionAlgorithm = "zstd" }, "unknown compression"},
	"GzipWithoutZinfo":     {func(z *Ztoc) { z.Gzip = nil }, "gzip checkpoints"},
	"GzipWithTarZinfo":     {func(z *Ztoc) { z.Tar = &TarZinfo{SpanSize: 1, Size: 1} }, "gzip checkpoints"},
}

var tarInvalidCases = map[string]invalidCase{
	"TarSpanSizeZero":   {func(z *Ztoc) { z.Tar.SpanSize = 0 }, "span size"},
	"TarSizeMismatch":   {func(z *Ztoc) { z.Tar.Size = 4999 }, "differs from archive size"},
	"TarShorterThanTar": {func(z *Ztoc) { z.UncompressedArchiveSize = 5001; z.Tar.Size = 5000 }, "in a blob of"},
	"TarMaxSpanID":      {func(z *Ztoc) { z.MaxSpanID = 3; z.SpanDigests = append(z.SpanDigests, z.SpanDigests[0]) }, "max span id 3, want 2"},
	"TarExactMultiple": {func(z *Ztoc) {
		z.Tar.Size, z.CompressedArchiveSize = 6000, 6000 // 3 spans exactly: max id stays 2, so fine...
		z.Tar.SpanSize = 1500                            // ...but 4 spans of 1500 need max id 3
	}, "want 3"},
	"TarZero":         {func(z *Ztoc) { z.Tar.Size, z.CompressedArchiveSize, z.UncompressedArchiveSize = 0, 0, 0 }, "size is 0"},
	"TarWithoutZinfo": {func(z *Ztoc) { z.Tar = nil }, "tar zinfo"},
}

// TestValidateRefuses runs each invalid case through Validate, Marshal and
// (encoded without validation) Unmarshal: all three must refuse it with an
// error wrapping ErrInvalid.
func TestValidateRefuses(t *testing.T) {
	run := func(t *testing.T, base func() *Ztoc, cases map[string]invalidCase) {
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				z := base()
				c.mutate(z)
				err := z.Validate()
				mustInvalid(t, err)
				if !strings.Contains(err.Error(), c.want) {
					t.Errorf("error %q does not mention %q", err, c.want)
				}
				_, err = Marshal(z)
				mustInvalid(t, err)
				if buf, err := encode(z); err == nil && !modelOnly[name] {
					_, err = Unmarshal(buf)
					mustInvalid(t, err)
				}
			})
		}
	}
	t.Run("gzip", func(t *testing.T) { run(t, validGzipZtoc, gzipInvalidCases) })
	t.Run("tar", func(t *testing.T) { run(t, validTarZtoc, tarInvalidCases) })
}

// TestValidateAccepts covers legal oddities real tars contain.
func TestValidateAccepts(t *testing.T) {
	cases := map[string]func(z *Ztoc){
		"DotSlashNames":     func(z *Ztoc) { z.TOC[0].Name = "./"; z.TOC[1].Name = "./dir/a"; z.TOC[2].Linkname = "dir/a" },
		"HardlinkCleanForm": func(z *Ztoc) { z.TOC[2].Linkname = "./dir//a" },
		"SymlinkAbsolute":   func(z *Ztoc) { z.TOC[3].Linkname = "/usr/bin/x" },
		"UnsortedOffsets":   func(z *Ztoc) { z.TOC[0], z.TOC[3] = z.TOC[3], z.TOC[0] },
		"LastCheckpointAtEnd": func(z *Ztoc) {
			z.Gzip.Checkpoints[1].Out = z.UncompressedArchiveSize
		},
		"DuplicateName": func(z *Ztoc) { z.TOC[3].Name = "dir/a"; z.TOC[3].Type = TypeReg; z.TOC[3].Linkname = "" },
		"ZeroModTime":   func(z *Ztoc) { z.TOC[0].ModTime = time.Time{} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			z := validGzipZtoc()
			mutate(z)
			buf, err := Marshal(z)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Unmarshal(buf); err != nil {
				t.Fatal(err)
			}
		})
	}
}
