package span

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"

	"github.com/ociseek/ociseek/ztoc"
)

// ZtocIdentity names a zTOC in cache keys and rejection records: its
// digest's hex when it was decoded from a blob (the usual case), else a
// fingerprint of everything that decides what bytes a span holds (span
// digests, checkpoint positions and windows), so that zTOCs built in memory
// get distinct names too.
func ZtocIdentity(z *ztoc.Ztoc) string {
	if z.Digest != "" {
		return z.Digest.Encoded()
	}
	h := sha256.New()
	var num [8]byte
	put := func(v int64) {
		binary.LittleEndian.PutUint64(num[:], uint64(v))
		h.Write(num[:])
	}
	put(z.CompressedArchiveSize)
	put(z.UncompressedArchiveSize)
	for _, d := range z.SpanDigests {
		io.WriteString(h, d.String())
	}
	if z.Gzip != nil {
		for _, c := range z.Gzip.Checkpoints {
			put(c.In)
			put(c.Out)
			put(int64(c.Bits))
			h.Write(c.Window)
		}
	}
	if z.Tar != nil {
		put(z.Tar.SpanSize)
	}
	return "fp-" + hex.EncodeToString(h.Sum(nil))
}

// sizedCache is implemented by caches that can tell a value's length
// (fs/cache's Cache does); the Manager then refuses a cached span whose
// length is not the span's.
type sizedCache interface {
	Len(key string) (int64, bool)
}

// readCached fills dst from span id's cached bytes at off, reporting
// whether it could: a missing, short or wrongly sized value is a miss.
func (m *Manager) readCached(id ztoc.SpanID, dst []byte, off int64) bool {
	key := m.cacheKey(id)
	if sc, ok := m.cache.(sizedCache); ok {
		if n, ok := sc.Len(key); !ok || n != m.spans[id].UncompressedSize() {
			return false
		}
	}
	n, err := m.cache.ReadAt(key, dst, off)
	return n == len(dst) && (err == nil || err == io.EOF)
}
