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
		// A mounted layer never changes, so the kernel may keep its entries
		// and attributes for as long as it is mounted; the reference's 1 s
		// makes a tree walk ten times slower than overlayfs.
		FUSE: FUSE{
			CacheTimeout: Dur(24 * time.Hour),
			MountTimeout: Dur(30 * time.Second),
			Passthrough:  true,
		},
		Fetch: Fetch{
			RequestTimeout: Dur(5 * time.Minute),
			// 64 KiB/s over 10 s: far below any working registry, so only
			// a stalled or trickling one is cut short.
			MinBytesPerSecond: 64 << 10,
			MinRateWindow:     Dur(10 * time.Second),
			MaxRetries:        8,
			MinRetryWait:      Dur(30 * time.Millisecond),
			MaxRetryWait:      Dur(5 * time.Second),
			MaxRetryAfter:     Dur(10 * time.Second),
			MaxConcurrency:    64,
			// Chosen from measurements (docs/benchmarks.md, issue 15: the
			// 360 MB image of 20k files started, read and completed at
			// full speed): the daemon peaked at 150-157 MB without a
			// bound, 115 MB with this one (19 collections instead of 8
			// during the 128 MiB read); below it the collector ran back
			// to back (96 MiB: 157 collections, 2.7 times the CPU).
			MemoryLimit: 128 << 20,
			Verify:      VerifyStrict,
		},
		Cache: Cache{
			MaxBytes: 10 << 30,
		},
		BackgroundFetch: BackgroundFetch{
			Enable:        true,
			SilencePeriod: Dur(30 * time.Second),
			RetryDelay:    Dur(2 * time.Second),
			MaxDeferral:   Dur(30 * time.Second),
			StepTimeout:   Dur(2 * time.Minute),
			Policy:        PolicyFullSpeed,
			Parallel:      4,
		},
		Discovery: Discovery{
			V2:                true,
			V1:                true,
			V1Trusted:         []string{},
			IndexRepositories: map[string]string{},
			CacheTTL:          Dur(10 * time.Minute),
			NegativeCacheTTL:  Dur(time.Minute),
			// The reasons for these figures are in index/discover
			// (limits.go): far above real layers' zTOCs, far below what
			// would hurt a node.
			MaxZtocBytes:     64 << 20,
			MaxZtocEntries:   500_000,
			MaxZtocSpans:     16_384,
			ZtocMemoryBudget: 1 << 30,
		},
		Registry: Registry{
			PlainHTTP: []string{},
			// containerd's own default, so that a node's mirrors apply
			// without a line of ours.
			ConfigPath: "/etc/containerd/certs.d",
		},
		Metrics: Metrics{
			Network: "tcp",
		},
		CRIKeychain: defaultCRIKeychain(),
	}
}
