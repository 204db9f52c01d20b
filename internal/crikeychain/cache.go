package crikeychain

import (
	"context"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// RotatingCache is an oras token cache that starts empty again every
// period. oras keeps a registry's tokens until the registry refuses one,
// and for a basic-auth registry the "token" is base64 of user:password:
// without rotation, credentials a pull brought would stay in memory, and
// keep opening the registry, long after the Keychain forgot them. With
// it, a token outlives the credentials it came from by at most period;
// each registry then answers one more challenge per period, and the
// Keychain (or the Docker config) is asked again.
type RotatingCache struct {
	period time.Duration
	now    func() time.Time

	mu    sync.Mutex
	inner auth.Cache
	born  time.Time
}

// NewRotatingCache returns an empty RotatingCache; now nil means time.Now.
func NewRotatingCache(period time.Duration, now func() time.Time) *RotatingCache {
	if now == nil {
		now = time.Now
	}
	return &RotatingCache{period: period, now: now, inner: auth.NewCache(), born: now()}
}

// current returns the cache of this period, dropping the last one's.
func (c *RotatingCache) current() auth.Cache {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.born) >= c.period {
		c.inner, c.born = auth.NewCache(), now
	}
	return c.inner
}

// GetScheme implements auth.Cache.
func (c *RotatingCache) GetScheme(ctx context.Context, registry string) (auth.Scheme, error) {
	return c.current().GetScheme(ctx, registry)
}

// GetToken implements auth.Cache.
func (c *RotatingCache) GetToken(ctx context.Context, registry string, scheme auth.Scheme, key string) (string, error) {
	return c.current().GetToken(ctx, registry, scheme, key)
}

// Set implements auth.Cache.
func (c *RotatingCache) Set(ctx context.Context, registry string, scheme auth.Scheme, key string, fetch func(context.Context) (string, error)) (string, error) {
	return c.current().Set(ctx, registry, scheme, key, fetch)
}
