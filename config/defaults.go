package config

import "time"

// Default returns the configuration used when a key (or the whole file) is
// absent. It is the only place defaults live.
func Default() *Config {
	return &Config{
		Daemon: Daemon{
			Root:     "/var/lib/ociseek",
			Address:  "/run/ociseek/ociseek.sock",
			LogLevel: "info",
		},
		Snapshotter: Snapshotter{
			Lazy:        true,
			LocalUnpack: true,
		},
		FUSE: FUSE{
			AttrTimeout:     Dur(time.Second),
			EntryTimeout:    Dur(time.Second),
			NegativeTimeout: Dur(time.Second),
			MountTimeout:    Dur(30 * time.Second),
		},
		Fetch: Fetch{
			RequestTimeout: Dur(5 * time.Minute),
			MaxRetries:     8,
			MinRetryWait:   Dur(30 * time.Millisecond),
			MaxRetryWait:   Dur(5 * time.Second),
			MaxConcurrency: 64,
			VerifyRetries:  3,
		},
		Cache: Cache{
			MaxBytes: 10 << 30,
		},
		BackgroundFetch: BackgroundFetch{
			Enable:        true,
			SilencePeriod: Dur(30 * time.Second),
			FetchPeriod:   Dur(500 * time.Millisecond),
			MaxQueue:      300,
		},
		Discovery: Discovery{
			V2:                true,
			V1:                true,
			IndexRepositories: map[string]string{},
			CacheTTL:          Dur(10 * time.Minute),
			NegativeCacheTTL:  Dur(time.Minute),
		},
		Registry: Registry{
			PlainHTTP: []string{},
		},
		Metrics: Metrics{
			Network: "tcp",
		},
	}
}
