package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Validate reports every invalid value at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if !filepath.IsAbs(c.Daemon.Root) {
		bad("daemon.root", "must be an absolute path, got %q", c.Daemon.Root)
	}
	if !filepath.IsAbs(c.Daemon.Address) {
		bad("daemon.address", "must be an absolute socket path, got %q", c.Daemon.Address)
	}
	switch c.Daemon.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("daemon.log_level", "must be trace, debug, info, warn or error, got %q", c.Daemon.LogLevel)
	}
	// Listed in file order, so that errors come out in a stable order.
	for _, kv := range []struct {
		key      string
		d        Duration
		positive bool
	}{
		{"fuse.cache_timeout", c.FUSE.CacheTimeout, false},
		{"fuse.mount_timeout", c.FUSE.MountTimeout, true},
		{"fetch.request_timeout", c.Fetch.RequestTimeout, true},
		{"fetch.min_rate_window", c.Fetch.MinRateWindow, true},
		{"fetch.min_retry_wait", c.Fetch.MinRetryWait, false},
		{"fetch.max_retry_after", c.Fetch.MaxRetryAfter, true},
		{"background_fetch.silence_period", c.BackgroundFetch.SilencePeriod, false},
		{"background_fetch.retry_delay", c.BackgroundFetch.RetryDelay, true},
		{"background_fetch.max_deferral", c.BackgroundFetch.MaxDeferral, true},
		{"background_fetch.step_timeout", c.BackgroundFetch.StepTimeout, true},
		{"discovery.cache_ttl", c.Discovery.CacheTTL, false},
		{"discovery.negative_cache_ttl", c.Discovery.NegativeCacheTTL, false},
	} {
		switch {
		case kv.positive && kv.d.Duration <= 0:
			bad(kv.key, "must be positive, got %s", kv.d.Duration)
		case kv.d.Duration < 0:
			bad(kv.key, "must not be negative, got %s", kv.d.Duration)
		}
	}
	if c.Fetch.MaxRetryWait.Duration < c.Fetch.MinRetryWait.Duration {
		bad("fetch.max_retry_wait", "must not be below fetch.min_retry_wait")
	}
	for _, kv := range []struct {
		key string
		n   int64
	}{
		{"snapshotter.min_layer_size", c.Snapshotter.MinLayerSize},
		{"fetch.min_bytes_per_second", c.Fetch.MinBytesPerSecond},
		{"fetch.max_retries", int64(c.Fetch.MaxRetries)},
		{"cache.max_bytes", c.Cache.MaxBytes},
		{"background_fetch.max_bytes_per_second", c.BackgroundFetch.MaxBytesPerSecond},
		{"discovery.max_ztoc_bytes", c.Discovery.MaxZtocBytes},
		{"discovery.max_ztoc_entries", c.Discovery.MaxZtocEntries},
		{"discovery.max_ztoc_spans", c.Discovery.MaxZtocSpans},
		{"discovery.ztoc_memory_budget", c.Discovery.ZtocMemoryBudget},
	} {
		if kv.n < 0 {
			bad(kv.key, "must not be negative, got %d", kv.n)
		}
	}
	if m := c.Fetch.MemoryLimit; m != 0 && m < 32<<20 {
		bad("fetch.memory_limit", "must be 0 (no bound) or at least 33554432 (32 MiB), got %d", m)
	}
	if c.Fetch.MaxConcurrency < 1 {
		bad("fetch.max_concurrency", "must be at least 1, got %d", c.Fetch.MaxConcurrency)
	}
	if c.BackgroundFetch.Policy != PolicyFullSpeed && c.BackgroundFetch.Policy != PolicyIdle {
		bad("background_fetch.policy", "must be %q or %q, got %q", PolicyFullSpeed, PolicyIdle, c.BackgroundFetch.Policy)
	}
	if c.BackgroundFetch.Parallel < 1 {
		bad("background_fetch.parallel", "must be at least 1, got %d", c.BackgroundFetch.Parallel)
	}
	if c.Fetch.Verify != VerifyStrict && c.Fetch.Verify != VerifyDeferred {
		bad("fetch.verify", "must be %q or %q, got %q", VerifyStrict, VerifyDeferred, c.Fetch.Verify)
	}
	if c.Cache.Dir != "" && !filepath.IsAbs(c.Cache.Dir) {
		bad("cache.dir", "must be an absolute path, got %q", c.Cache.Dir)
	}
	if c.Snapshotter.Lazy && !c.Discovery.V1 && !c.Discovery.V2 {
		bad("discovery", "v1 and v2 are both off, so no layer can be lazy; set snapshotter.lazy = false instead")
	}
	for src, dst := range c.Discovery.IndexRepositories {
		if !validRepo(src) || !validRepo(dst) {
			bad("discovery.index_repositories", "entries are host/repository = host/repository, got %q = %q", src, dst)
		}
	}
	for _, r := range c.Discovery.V1Trusted {
		if !validRepoPrefix(r) {
			bad("discovery.v1_trusted_repositories", "entries are host or host/repository, got %q", r)
		}
	}
	for _, h := range c.Registry.PlainHTTP {
		if h == "" || strings.ContainsAny(h, "/ ") {
			bad("registry.plain_http", "entries are host or host:port, got %q", h)
		}
	}
	if c.Registry.ConfigPath != "" && !filepath.IsAbs(c.Registry.ConfigPath) {
		bad("registry.config_path", "must be an absolute path, got %q", c.Registry.ConfigPath)
	}
	switch c.Metrics.Network {
	case "tcp", "unix":
	default:
		bad("metrics.network", "must be tcp or unix, got %q", c.Metrics.Network)
	}
	c.CRIKeychain.validate(c.Daemon.Address, bad)
	return errors.Join(errs...)
}

// validRepoPrefix accepts host or host/path, with no scheme, whitespace,
// tag or digest; a trailing "/" or "/..." is allowed.
func validRepoPrefix(s string) bool {
	host, path, _ := strings.Cut(strings.TrimSuffix(strings.TrimSuffix(s, "..."), "/"), "/")
	return host != "" && !strings.Contains(path, ":") && !strings.Contains(s, "://") && !strings.ContainsAny(s, " \t@")
}

// validRepo accepts host/path with a non-empty host and path and no
// whitespace, tag or digest.
func validRepo(s string) bool {
	host, path, ok := strings.Cut(s, "/")
	return ok && host != "" && path != "" && !strings.ContainsAny(s, " \t@")
}
