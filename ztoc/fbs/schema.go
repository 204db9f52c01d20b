package fbs

// Field slots of the zTOC schema (namespace ztoc) and of the uncompressed
// layer's TarZinfo (namespace zinfo), as declared in the reference .fbs
// files: a field's slot is its declaration index, and its vtable entry sits
// at byte 4+2·slot. See the zTOC schema of the AWS
// soci-snapshotter (ztoc/fbs/ztoc.fbs).

// Table Ztoc, the root of a zTOC buffer.
const (
	ZtocVersion                 = 0 // string
	ZtocBuildToolIdentifier     = 1 // string
	ZtocCompressedArchiveSize   = 2 // int64
	ZtocUncompressedArchiveSize = 3 // int64
	ZtocTOC                     = 4 // table TOC
	ZtocCompressionInfo         = 5 // table CompressionInfo
	ZtocNumFields               = 6
)

// Table TOC.
const (
	TOCMetadata  = 0 // [FileMetadata]
	TOCNumFields = 1
)

// Table FileMetadata.
const (
	FileMetadataName               = 0  // string
	FileMetadataType               = 1  // string
	FileMetadataUncompressedOffset = 2  // int64
	FileMetadataUncompressedSize   = 3  // int64
	FileMetadataLinkname           = 4  // string
	FileMetadataMode               = 5  // int64
	FileMetadataUID                = 6  // uint32
	FileMetadataGID                = 7  // uint32
	FileMetadataUname              = 8  // string
	FileMetadataGname              = 9  // string
	FileMetadataModTime            = 10 // string
	FileMetadataDevmajor           = 11 // int64
	FileMetadataDevminor           = 12 // int64
	FileMetadataXattrs             = 13 // [Xattr]
	FileMetadataNumFields          = 14
)

// Table Xattr (really a PAX record).
const (
	XattrKey       = 0 // string
	XattrValue     = 1 // string
	XattrNumFields = 2
)

// Table CompressionInfo.
const (
	CompressionInfoCompressionAlgorithm = 0 // CompressionAlgorithm (byte enum)
	CompressionInfoMaxSpanID            = 1 // int32
	CompressionInfoSpanDigests          = 2 // [string]
	CompressionInfoCheckpoints          = 3 // [ubyte]
	CompressionInfoNumFields            = 4
)

// Values of enum CompressionAlgorithm. The field's schema default is
// AlgorithmGzip, so a buffer without the field means gzip.
const (
	AlgorithmGzip         int8 = 1
	AlgorithmUncompressed int8 = 2
)

// Table TarZinfo (namespace zinfo), root of an uncompressed layer's
// checkpoints blob.
const (
	TarZinfoVersion   = 0 // int32
	TarZinfoSpanSize  = 1 // int64
	TarZinfoSize      = 2 // int64
	TarZinfoNumFields = 3
)
