// Package cache owns ociseek's on-disk span cache: values (uncompressed
// spans) stored as one file each under a directory, bounded in bytes with
// least-recently-used eviction.
//
// Concepts:
//   - Writes are atomic: a value is written to a temporary file in the cache
//     directory and renamed into place, so a reader never sees half a value
//     and a crash leaves at most a temp file, which New removes.
//   - Every file carries a CRC-32C per 32 KiB block plus a checksummed footer
//     (see format.go). ReadAt verifies the blocks it returns; a corrupt or
//     truncated file is deleted and reported as ErrCacheMiss, so the caller
//     fetches the value again instead of serving bad bytes.
//   - The index (key → file, LRU order) lives in memory and is rebuilt from
//     the files' footers by New, so a restart keeps a warm cache.
//
// Hazards: the checksums detect accidents (torn writes, bit rot, a full
// disk), not an attacker with write access to the directory; the directory
// must be private to the daemon. Values are not fsynced: after a crash a file
// may be torn, which the checksums catch.
package cache

import (
	"cmp"
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrCacheMiss reports a key that is not cached, or whose file was found
// corrupt (and removed). Callers fetch the value again.
var ErrCacheMiss = errors.New("cache miss")

// ErrClosed reports use of a closed Cache.
var ErrClosed = errors.New("cache closed")

// ErrTooLarge reports a value larger than the whole cache.
var ErrTooLarge = errors.New("value larger than cache")

// DefaultMaxBytes bounds the cache when no WithMaxBytes option is given.
const DefaultMaxBytes int64 = 10 << 30

// DefaultBlockSize is the checksum granularity.
const DefaultBlockSize int64 = 32 << 10

const tempPrefix = "tmp-"

// Opt configures a Cache.
type Opt func(*config) error

type config struct {
	maxBytes  int64
	blockSize int64
	buffered  bool // never write with direct I/O
}

// WithMaxBytes bounds the bytes on disk (values and their trailers).
func WithMaxBytes(n int64) Opt {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("cache size %d: must be positive", n)
		}
		c.maxBytes = n
		return nil
	}
}

// WithBlockSize sets the checksum block size (tests use small blocks).
func WithBlockSize(n int64) Opt {
	return func(c *config) error {
		if n < 512 || n > 1<<30 {
			return fmt.Errorf("cache block size %d: must be in [512, 1 GiB]", n)
		}
		c.blockSize = n
		return nil
	}
}

// WithBufferedWrites turns direct I/O off: every value goes through the page
// cache, as on a filesystem without O_DIRECT (tests compare the two).
func WithBufferedWrites() Opt {
	return func(c *config) error {
		c.buffered = true
		return nil
	}
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	// Entries and Bytes describe what is stored now.
	Entries int
	Bytes   int64
	// Evictions counts values dropped to stay under the size bound.
	Evictions int64
	// Corruptions counts files found corrupt or truncated and removed.
	Corruptions int64
}

// entry is the in-memory record of one file.
type entry struct {
	key       string
	path      string
	fileSize  int64
	dataLen   int64
	blockSize int64
	crcs      []uint32
}

// Cache is a size-bounded on-disk key/value store. It is safe for
// concurrent use.
type Cache struct {
	dir string
	cfg config

	// mu guards everything below: the index, the LRU order and the counters
	// must change together so used always equals the sum of fileSize.
	mu      sync.Mutex
	entries map[string]*list.Element // of *entry
	lru     *list.List               // front = most recently used
	used    int64
	closed  bool
	stats   Stats

	// noDirect is set once direct I/O was refused by the filesystem.
	noDirect atomic.Bool

	// scratchMu guards freeScratch, read buffers for reuse (read.go).
	scratchMu   sync.Mutex
	freeScratch [][]byte
}

// New opens (creating if needed) a cache in dir. Temp files left by a crash
// are removed; valid entry files are indexed, oldest first; files that fail
// their footer check are removed.
func New(dir string, opts ...Opt) (*Cache, error) {
	cfg := config{maxBytes: DefaultMaxBytes, blockSize: DefaultBlockSize}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create cache dir %s: %w", dir, err)
	}
	c := &Cache{dir: dir, cfg: cfg, entries: map[string]*list.Element{}, lru: list.New()}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// fileName maps a key to a fixed-length file name; keys may hold any bytes
// (layer digests contain ':') and are kept inside the file for reloading.
func fileName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:20])
}

// Put stores data under key, replacing any previous value, then evicts the
// least recently used values until the cache fits its bound.
func (c *Cache) Put(key string, data []byte) error {
	if len(key) == 0 || len(key) > maxKeyLen {
		return fmt.Errorf("cache put: key length %d out of range", len(key))
	}
	crcs := blockCRCs(data, c.cfg.blockSize)
	trailer := encodeTrailer(key, int64(len(data)), c.cfg.blockSize, crcs)
	size := int64(len(data)) + int64(len(trailer))
	if size > c.cfg.maxBytes {
		return fmt.Errorf("cache put %q (%d bytes): %w", key, size, ErrTooLarge)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("cache put %q: %w", key, ErrClosed)
	}
	path := filepath.Join(c.dir, fileName(key))
	if err := c.writeAtomic(path, data, trailer); err != nil {
		return fmt.Errorf("cache put %q: %w", key, err)
	}
	e := &entry{key: key, path: path, fileSize: size, dataLen: int64(len(data)),
		blockSize: c.cfg.blockSize, crcs: crcs}
	c.mu.Lock()
	c.insertLocked(e)
	victims := c.evictLocked()
	c.mu.Unlock()
	removeFiles(victims)
	return nil
}

// writeAtomic writes data+trailer to a temp file in dir and renames it to
// path, so the final name only ever holds a complete file. The aligned bulk
// of data is written with direct I/O where it can be (direct.go).
func (c *Cache) writeAtomic(path string, data, trailer []byte) (err error) {
	f, err := os.CreateTemp(c.dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	var off int64
	if n := c.directLen(data); n > 0 {
		ok, err := writeDirect(f.Name(), data[:n])
		if err != nil {
			return fmt.Errorf("write temp file: %w", err)
		}
		if ok {
			off = n
		} else {
			c.noDirect.Store(true) // not supported here: stop trying
		}
	}
	if _, err = f.WriteAt(data[off:], off); err != nil {
		return fmt.Errorf("write temp file: %w", err)
	}
	if _, err = f.WriteAt(trailer, int64(len(data))); err != nil {
		return fmt.Errorf("write temp file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close temp file: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename temp file: %w", err)
	}
	return nil
}

// insertLocked adds or replaces e in the index.
func (c *Cache) insertLocked(e *entry) {
	if el, ok := c.entries[e.key]; ok {
		old := el.Value.(*entry)
		c.used -= old.fileSize
		c.lru.Remove(el)
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.used += e.fileSize
}

// evictLocked drops least recently used entries until the cache fits and
// returns their paths; the files are removed after the lock is released.
func (c *Cache) evictLocked() []string {
	var victims []string
	for c.used > c.cfg.maxBytes {
		el := c.lru.Back()
		if el == nil {
			break
		}
		e := el.Value.(*entry)
		c.lru.Remove(el)
		delete(c.entries, e.key)
		c.used -= e.fileSize
		c.stats.Evictions++
		victims = append(victims, e.path)
	}
	return victims
}

func removeFiles(paths []string) {
	for _, p := range paths {
		// A reader holding the file open keeps its bytes (unlink semantics);
		// the error is ignored because the file may already be gone.
		_ = os.Remove(p)
	}
}

// Has reports whether key is indexed (its file may still turn out corrupt).
func (c *Cache) Has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[key]
	return ok
}

// Len returns the length of key's value and whether key is indexed.
func (c *Cache) Len(key string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return 0, false
	}
	return el.Value.(*entry).dataLen, true
}

// Remove deletes key's value, if any.
func (c *Cache) Remove(key string) {
	c.mu.Lock()
	el, ok := c.entries[key]
	if ok {
		c.dropLocked(el)
	}
	c.mu.Unlock()
	if ok {
		removeFiles([]string{el.Value.(*entry).path})
	}
}

func (c *Cache) dropLocked(el *list.Element) {
	e := el.Value.(*entry)
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.used -= e.fileSize
}

// Stats returns the current counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries = len(c.entries)
	s.Bytes = c.used
	return s
}

// Close makes later Puts and reads fail with ErrClosed. Files stay on disk
// for the next New.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// load indexes the files in the cache directory.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("read cache dir %s: %w", c.dir, err)
	}
	type found struct {
		e     *entry
		mtime int64
	}
	var all []found
	for _, de := range des {
		path := filepath.Join(c.dir, de.Name())
		if !de.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(de.Name(), tempPrefix) {
			_ = os.Remove(path) // left by a crash mid-Put
			continue
		}
		e, mtime, err := readIndexEntry(path)
		if err != nil || fileName(e.key) != de.Name() {
			_ = os.Remove(path)
			c.stats.Corruptions++
			continue
		}
		all = append(all, found{e, mtime})
	}
	// Oldest first, so the newest ends at the front of the LRU list.
	slices.SortFunc(all, func(a, b found) int { return cmp.Compare(a.mtime, b.mtime) })
	for _, f := range all {
		c.insertLocked(f.e)
	}
	removeFiles(c.evictLocked())
	return nil
}
