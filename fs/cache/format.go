package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk layout of one entry file:
//
//	data        dataLen bytes, the value as given to Put
//	crcs        4 bytes (little-endian CRC-32C) per block of blockSize data bytes
//	key         keyLen bytes, so a restart can rebuild the index from the files
//	footer      footerSize bytes: magic, dataLen, blockSize, keyLen, CRC-32C of
//	            crcs+key+the footer fields before it
//
// Per-block checksums let ReadAt verify only the blocks it returns, so a 2 KiB
// read of a 4 MiB span costs one block's checksum, not the whole file's. The
// footer's own checksum covers the block table, so a torn or truncated file
// fails the footer check instead of being trusted.
const (
	magic      = "OSKSPAN1"
	footerSize = 8 + 8 + 4 + 4 + 4 + 4
	// maxKeyLen bounds the key stored in a file, so a corrupt footer cannot
	// make us allocate much.
	maxKeyLen = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks an entry file that fails a structural or checksum check.
var errCorrupt = errors.New("corrupt cache file")

// footer is the decoded fixed-size tail of an entry file.
type footer struct {
	dataLen   int64
	blockSize int64
	keyLen    int64
	crc       uint32
}

func numBlocks(dataLen, blockSize int64) int64 {
	return (dataLen + blockSize - 1) / blockSize
}

// fileSize is the size an entry file with this footer must have.
func (f footer) fileSize() int64 {
	return f.dataLen + 4*numBlocks(f.dataLen, f.blockSize) + f.keyLen + footerSize
}

// blockCRCs computes the checksum of each block of data.
func blockCRCs(data []byte, blockSize int64) []uint32 {
	crcs := make([]uint32, 0, numBlocks(int64(len(data)), blockSize))
	for off := int64(0); off < int64(len(data)); off += blockSize {
		end := min(off+blockSize, int64(len(data)))
		crcs = append(crcs, crc32.Checksum(data[off:end], castagnoli))
	}
	return crcs
}

// encodeTrailer returns the bytes that follow the data: block table, key and
// footer.
func encodeTrailer(key string, dataLen, blockSize int64, crcs []uint32) []byte {
	buf := make([]byte, 0, 4*len(crcs)+len(key)+footerSize)
	for _, c := range crcs {
		buf = binary.LittleEndian.AppendUint32(buf, c)
	}
	buf = append(buf, key...)
	buf = append(buf, magic...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(dataLen))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(blockSize))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(key)))
	sum := crc32.Checksum(buf, castagnoli)
	buf = binary.LittleEndian.AppendUint32(buf, sum)
	return binary.LittleEndian.AppendUint32(buf, 0) // reserved
}

// decodeFooter parses and bounds-checks the footer of a file of fileSize
// bytes.
func decodeFooter(b []byte, fileSize int64) (footer, error) {
	if len(b) != footerSize || string(b[:8]) != magic {
		return footer{}, fmt.Errorf("bad footer magic: %w", errCorrupt)
	}
	f := footer{
		dataLen:   int64(binary.LittleEndian.Uint64(b[8:16])),
		blockSize: int64(binary.LittleEndian.Uint32(b[16:20])),
		keyLen:    int64(binary.LittleEndian.Uint32(b[20:24])),
		crc:       binary.LittleEndian.Uint32(b[24:28]),
	}
	if f.blockSize <= 0 || f.keyLen > maxKeyLen || f.dataLen < 0 || f.dataLen > fileSize {
		return footer{}, fmt.Errorf("footer fields out of range: %w", errCorrupt)
	}
	if f.fileSize() != fileSize {
		return footer{}, fmt.Errorf("file is %d bytes, footer implies %d: %w", fileSize, f.fileSize(), errCorrupt)
	}
	return f, nil
}

// decodeTrailer checks the block table and key (tail = everything after the
// data, footer included) against the footer checksum.
func decodeTrailer(tail []byte, f footer) (key string, crcs []uint32, err error) {
	n := numBlocks(f.dataLen, f.blockSize)
	if int64(len(tail)) != 4*n+f.keyLen+footerSize {
		return "", nil, fmt.Errorf("trailer length: %w", errCorrupt)
	}
	covered := tail[:len(tail)-8] // everything up to the checksum field
	if crc32.Checksum(covered, castagnoli) != f.crc {
		return "", nil, fmt.Errorf("trailer checksum: %w", errCorrupt)
	}
	crcs = make([]uint32, n)
	for i := range crcs {
		crcs[i] = binary.LittleEndian.Uint32(tail[4*i:])
	}
	key = string(tail[4*n : 4*n+f.keyLen])
	return key, crcs, nil
}
