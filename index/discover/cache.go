package discover

import (
	"sync"
	"time"
)

// purgeThreshold is the entry count above which put drops expired entries,
// so the cache of a long-lived daemon does not grow with every image ever
// looked up.
const purgeThreshold = 1024

type cacheEntry struct {
	res     *Result
	err     error
	expires time.Time
}

// resultCache holds lookup outcomes until they expire.
type resultCache struct {
	mu      sync.Mutex // guards entries
	entries map[string]cacheEntry
}

func newResultCache() *resultCache {
	return &resultCache{entries: make(map[string]cacheEntry)}
}

func (c *resultCache) get(key string, now time.Time) (*Result, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.expires) {
		return nil, nil, false
	}
	return e.res, e.err, true
}

func (c *resultCache) put(key string, res *Result, err error, expires, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= purgeThreshold {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
	}
	c.entries[key] = cacheEntry{res: res, err: err, expires: expires}
}
