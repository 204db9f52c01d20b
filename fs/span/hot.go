package span

import (
	"slices"
	"sync"
	"time"

	"github.com/ociseek/ociseek/ztoc"
)

// hotIdle is how long an unused span stays in memory. A sequential reader
// or a burst of small-file reads comes back within milliseconds; an idle
// layer should not pin megabytes.
const hotIdle = 2 * time.Second

// hotSpans keeps the last few verified spans in memory, so a sequential
// reader (which reads a span in many 128 KiB requests, often after
// fetch-ahead inflated it) and reads of neighbouring small files copy from
// memory instead of reading back and checksumming the disk cache. Bounded
// by count; entries unused for hotIdle are released.
type hotSpans struct {
	max int

	// mu guards ents, timer and closed.
	mu     sync.Mutex
	ents   []hotSpan // least recently used first
	timer  *time.Timer
	closed bool
}

type hotSpan struct {
	id   ztoc.SpanID
	buf  *spanBuf // one reference held while listed
	used time.Time
	read bool // a reader copied from it (it was not only fetched ahead)
}

func newHotSpans(n int) *hotSpans { return &hotSpans{max: n} }

// add keeps buf (verified, never modified again) as span id's bytes,
// taking a reference of its own; the caller must hold one.
func (h *hotSpans) add(id ztoc.SpanID, buf *spanBuf) {
	if h.max <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.removeLocked(id)
	if len(h.ents) >= h.max {
		h.evictLocked()
	}
	h.ents = append(h.ents, hotSpan{id: id, buf: buf.retain(), used: time.Now()})
	if h.timer == nil {
		h.timer = time.AfterFunc(hotIdle, h.trim)
	}
}

// evictLocked drops the least recently used entry that was read, or the
// oldest if none was. Plain LRU order dropped spans fetched ahead before
// the sequential reader got to them (they were added before its last use
// of the span it was reading), so every other span of a sequential read
// was read back from the disk cache.
func (h *hotSpans) evictLocked() {
	victim := 0
	for i, e := range h.ents {
		if e.read {
			victim = i
			break
		}
	}
	h.ents[victim].buf.release()
	h.ents = slices.Delete(h.ents, victim, victim+1)
}

// read copies span id's bytes from off into dst if the span is held.
func (h *hotSpans) read(id ztoc.SpanID, dst []byte, off int64) bool {
	if h.max <= 0 {
		return false
	}
	h.mu.Lock()
	var buf *spanBuf
	for i := range h.ents {
		if e := &h.ents[i]; e.id == id {
			e.used, e.read = time.Now(), true
			buf = e.buf.retain() // copied from outside the lock
			if i != len(h.ents)-1 {
				ent := *e
				h.ents = append(slices.Delete(h.ents, i, i+1), ent)
			}
			break
		}
	}
	h.mu.Unlock()
	if buf == nil {
		return false
	}
	defer buf.release()
	if off+int64(len(dst)) > int64(len(buf.b)) {
		return false
	}
	copy(dst, buf.b[off:])
	return true
}

// has reports whether span id is held.
func (h *hotSpans) has(id ztoc.SpanID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.ents {
		if e.id == id {
			return true
		}
	}
	return false
}

// drop forgets span id.
func (h *hotSpans) drop(id ztoc.SpanID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(id)
}

func (h *hotSpans) removeLocked(id ztoc.SpanID) {
	for i, e := range h.ents {
		if e.id == id {
			e.buf.release()
			h.ents = slices.Delete(h.ents, i, i+1)
			return
		}
	}
}

// trim releases entries idle for hotIdle and re-arms while any remain.
func (h *hotSpans) trim() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	now := time.Now()
	kept := h.ents[:0]
	for _, e := range h.ents {
		if now.Sub(e.used) < hotIdle {
			kept = append(kept, e)
		} else {
			e.buf.release()
		}
	}
	clear(h.ents[len(kept):])
	h.ents = kept
	if len(h.ents) == 0 {
		h.timer = nil
		return
	}
	h.timer.Reset(hotIdle)
}

// close releases everything and stops the timer.
func (h *hotSpans) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
	for _, e := range h.ents {
		e.buf.release()
	}
	h.ents = nil
}
