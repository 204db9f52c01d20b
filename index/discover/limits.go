package discover

import (
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/ztoc"
)

// Bounds on the zTOCs a Discoverer accepts, used when Options leaves them
// zero. A zTOC is held whole in memory for as long as its layer is mounted
// (its checkpoint windows alias the fetched bytes), and anyone who can push
// an index chooses its size, so the bounds are far above what real layers
// need and far below what would hurt a node. Measured (Go 1.26, 4 MiB
// spans, names of about 55 bytes): a 20k-file layer's zTOC is 4.2 MB and
// holds 9.1 MB of heap with the blob; 100k files, 21 MB and 45 MB. Each
// entry costs about 245 bytes of heap beyond the blob, 620 when it carries
// a PAX record (a sub-second mtime).
//
//   - 64 MiB of zTOC is about 250,000 such files, or 2,000 gzip spans (32
//     KiB of window each): an 8 GiB layer at 4 MiB spans;
//   - 500,000 entries bounds zTOCs whose entries are unusually compact, to
//     about 120 MiB of heap beyond the blob, five times the 100k-file layer;
//   - 16,384 spans are a 64 GiB layer at 4 MiB spans; the bound matters for
//     uncompressed layers and tiny span sizes, where spans carry no window
//     and the size bound alone would allow millions of them;
//   - 1 GiB for the zTOCs of every mounted layer together: more than 100
//     layers like the 20k-file one.
const (
	DefaultMaxZtocSize    = 64 << 20
	DefaultMaxZtocEntries = 500_000
	DefaultMaxZtocSpans   = 16_384
	DefaultZtocBudget     = 1 << 30
)

// limits are the effective zTOC bounds; a negative value means no bound.
type limits struct {
	size, entries, spans int64
}

func newLimits(o Options) limits {
	pick := func(v, def int64) int64 {
		if v == 0 {
			return def
		}
		return v
	}
	return limits{
		size:    min(pick(o.MaxZtocSize, DefaultMaxZtocSize), ztoc.MaxSize),
		entries: pick(int64(o.MaxZtocEntries), DefaultMaxZtocEntries),
		spans:   pick(int64(o.MaxZtocSpans), DefaultMaxZtocSpans),
	}
}

// maxSize is the largest zTOC blob read, never above ztoc.MaxSize.
func (l limits) maxSize() int64 {
	if l.size < 0 {
		return ztoc.MaxSize
	}
	return l.size
}

// checkSize refuses, before anything is downloaded, a zTOC whose descriptor
// says it is over the size bound.
func (l limits) checkSize(desc digest.Digest, size int64) error {
	if size > l.maxSize() {
		return fmt.Errorf("zTOC %s: %d bytes, over the %d byte bound: %w", desc, size, l.maxSize(), index.ErrZtocTooLarge)
	}
	return nil
}

// checkDecoded refuses a decoded zTOC with too many entries or spans. The
// decode itself was bounded by the blob size.
func (l limits) checkDecoded(desc digest.Digest, z *ztoc.Ztoc) error {
	if n := int64(len(z.TOC)); l.entries >= 0 && n > l.entries {
		return fmt.Errorf("zTOC %s: %d entries, over the bound of %d: %w", desc, n, l.entries, index.ErrZtocTooLarge)
	}
	if n := int64(z.MaxSpanID) + 1; l.spans >= 0 && n > l.spans {
		return fmt.Errorf("zTOC %s: %d spans, over the bound of %d: %w", desc, n, l.spans, index.ErrZtocTooLarge)
	}
	return nil
}

// heldSize estimates the memory a decoded zTOC keeps: its blob (the
// windows alias it), the entries with their own strings, and the span
// digests and checkpoints. Strings shared between entries (types, owner
// names) are not counted. It comes within a few percent of the heap a
// decoded zTOC really keeps (TestHeldSizeEstimate).
func heldSize(z *ztoc.Ztoc, raw []byte) int64 {
	// Allocation overheads, from Go 1.26's runtime: a string's bytes are
	// rounded up to a size class (counted as 16 bytes more), and a map
	// holds at least one group of 8 slots (320 bytes with its header).
	const strAlloc, mapBase, mapSlot = 16, 320, 32
	n := int64(len(raw)) + int64(len(z.TOC))*int64(unsafe.Sizeof(ztoc.FileMetadata{}))
	for i := range z.TOC {
		m := &z.TOC[i]
		n += int64(len(m.Name)+len(m.Linkname)) + 2*strAlloc
		if m.PAXRecords != nil {
			n += mapBase
		}
		for k, v := range m.PAXRecords {
			n += int64(len(k)+len(v)) + 2*strAlloc + mapSlot
		}
	}
	spans := int64(z.MaxSpanID) + 1
	n += spans * (int64(unsafe.Sizeof(digest.Digest(""))) + int64(len(digest.Canonical.FromString("").String())))
	n += spans * int64(unsafe.Sizeof(ztoc.Checkpoint{}))
	return n
}

// budget counts the estimated memory of the zTOCs handed out by LayerZtoc
// and still referenced. Nothing tells a Discoverer when a layer is
// unmounted, so a zTOC's share is returned by a runtime cleanup once the
// zTOC is garbage. Collections are left to the runtime, except when a zTOC
// does not fit: then one is forced (at most once per reclaimEvery), so that
// layers unmounted since the last collection do not keep new ones out.
type budget struct {
	limit        int64 // negative: no bound
	reclaimEvery time.Duration

	mu          sync.Mutex // guards used and lastReclaim
	used        int64
	lastReclaim time.Time
}

// defaultReclaimEvery bounds forced collections: each costs a few
// milliseconds of CPU on a daemon's heap, and a burst of refused layers
// must not become a burst of collections.
const defaultReclaimEvery = time.Second

// reclaimWait is how long after a forced collection the cleanups it queued
// are given to return their shares.
const reclaimWait = 20 * time.Millisecond

func newBudget(limit int64) *budget {
	return &budget{limit: limit, reclaimEvery: defaultReclaimEvery}
}

// fits reports, before a fetch, whether n more bytes could fit.
func (b *budget) fits(n int64) bool {
	return b.try(n, false) || b.reclaim() && b.try(n, false)
}

// try reports whether n more bytes fit and, with charge, charges them.
func (b *budget) try(n int64, charge bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit >= 0 && b.used+n > b.limit {
		return false
	}
	if charge {
		b.used += n
	}
	return true
}

// reclaim forces a collection, unless one was forced less than
// reclaimEvery ago, and gives its cleanups a moment to run. It reports
// whether it collected.
func (b *budget) reclaim() bool {
	b.mu.Lock()
	now := time.Now()
	if !b.lastReclaim.IsZero() && now.Sub(b.lastReclaim) < b.reclaimEvery {
		b.mu.Unlock()
		return false
	}
	b.lastReclaim = now
	before := b.used
	b.mu.Unlock()
	runtime.GC()
	// Cleanups run on their own goroutine after the collection; there is
	// no way to wait for them, so poll briefly for the count to drop.
	for deadline := time.Now().Add(reclaimWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if b.inUse() < before {
			break
		}
	}
	return true
}

// hold charges z's estimated size against the budget, or refuses it, and
// arranges for the charge to be returned when z is collected.
func (b *budget) hold(desc digest.Digest, z *ztoc.Ztoc, raw []byte) error {
	n := heldSize(z, raw)
	if !b.try(n, true) && !(b.reclaim() && b.try(n, true)) {
		return fmt.Errorf("zTOC %s: about %d bytes with %d of the %d byte budget of mounted zTOCs in use: %w",
			desc, n, b.inUse(), b.limit, index.ErrZtocBudget)
	}
	runtime.AddCleanup(z, b.release, n)
	return nil
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// inUse returns the bytes currently charged.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
