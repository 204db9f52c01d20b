// Package config owns ociseek-snapshotter's configuration file: its TOML
// format, the defaults and the validation. Only cmd imports it; cmd turns
// the values into options of the packages it wires, so no implementation
// package sees TOML types.
//
// Rules the format keeps: every option has its default in Default (one
// place, nothing defaulted later with "if x == 0"); unknown keys are an
// error, so a typo is never silently ignored; durations are Go duration
// strings ("30s"), sizes are plain byte counts.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is where the daemon reads its configuration by default.
const DefaultPath = "/etc/ociseek/config.toml"

// maxFileSize bounds the configuration read, so that a wrong path (a
// device, a huge log) gives an error instead of exhausting memory.
const maxFileSize = 1 << 20

// Config is the whole configuration file.
type Config struct {
	Daemon          Daemon          `toml:"daemon" comment:"Process-wide settings; the flags --root, --address and --log-level override them."`
	Snapshotter     Snapshotter     `toml:"snapshotter" comment:"How layers are served: lazily, unpacked by the daemon, or left to containerd."`
	FUSE            FUSE            `toml:"fuse" comment:"FUSE mounts of lazily loaded layers."`
	Fetch           Fetch           `toml:"fetch" comment:"Range requests to registries."`
	Cache           Cache           `toml:"cache" comment:"On-disk cache of fetched spans."`
	BackgroundFetch BackgroundFetch `toml:"background_fetch" comment:"Completing mounted layers in the background, while the node is quiet."`
	Discovery       Discovery       `toml:"discovery" comment:"Finding an image's SOCI index and zTOCs."`
	Registry        Registry        `toml:"registry" comment:"Registry access."`
	Metrics         Metrics         `toml:"metrics" comment:"Prometheus metrics."`
	CRIKeychain     CRIKeychain     `toml:"cri_keychain" comment:"Credentials from kubelet, through a CRI ImageService proxy in front of containerd's."`
}

// Daemon holds process-wide settings.
type Daemon struct {
	Root     string `toml:"root" comment:"State directory: snapshots, metadata and span cache."`
	Address  string `toml:"address" comment:"Unix socket containerd connects to (created with mode 0660)."`
	LogLevel string `toml:"log_level" comment:"trace, debug, info, warn or error."`
}

// Snapshotter chooses how layers are served.
type Snapshotter struct {
	Lazy                        bool  `toml:"lazy" comment:"Serve indexed layers lazily over FUSE. false: every layer is pulled by containerd."`
	LocalUnpack                 bool  `toml:"local_unpack" comment:"When an image is indexed but a layer has no zTOC, let the daemon fetch, verify and unpack that layer itself."`
	AsyncRemove                 bool  `toml:"async_remove" comment:"Delete snapshot directories during containerd's garbage collection (Cleanup) instead of on Remove."`
	AllowInvalidMountsOnRestart bool  `toml:"allow_invalid_mounts_on_restart" comment:"Start even if lazy layers of the previous run cannot be mounted again."`
	MinLayerSize                int64 `toml:"min_layer_size" comment:"Layers smaller than this many bytes (as the containerd.io/snapshot/remote/soci.size label says; nerdctl sends it, CRI does not) are unpacked by the daemon instead of mounted lazily. 0: no minimum."`
}

// FUSE configures the FUSE mounts.
type FUSE struct {
	CacheTimeout Duration `toml:"cache_timeout" comment:"How long the kernel caches file attributes, name lookups and failed lookups (one value: a layer never changes while mounted)."`
	MountTimeout Duration `toml:"mount_timeout" comment:"Longest time a layer mount may take (index discovery and zTOC fetch included)."`
	Debug        bool     `toml:"debug" comment:"Log every FUSE operation (very verbose)."`
	Passthrough  bool     `toml:"passthrough" comment:"Once a layer is fully fetched and verified, let the kernel read its files straight from local copies under <root>/fs/files (FUSE passthrough, Linux 6.9 or later). The copies are removed on unmount and do not count toward cache.max_bytes."`
}

// Fetch configures registry range reads.
type Fetch struct {
	RequestTimeout    Duration `toml:"request_timeout" comment:"Longest time one HTTP request may take, headers and body, however fast its bytes come."`
	MinBytesPerSecond int64    `toml:"min_bytes_per_second" comment:"Slowest transfer a request may keep: every min_rate_window of a request, from its start (the wait for headers counts), must bring min_bytes_per_second × min_rate_window bytes, or all that is left of its range; else the request is abandoned and counts as a retry. A stalled or trickling server thus costs one window per request. 0: no minimum (request_timeout still applies)."`
	MinRateWindow     Duration `toml:"min_rate_window" comment:"Period over which min_bytes_per_second is averaged. A request of a range whose bytes all arrive at min_bytes_per_second takes at most its size / min_bytes_per_second + one window."`
	MaxRetries        int      `toml:"max_retries" comment:"Retries of one range read (connection errors, truncated or too slow bodies, 408, 429, 5xx but 501, an expired storage URL): a read sends at most 1 + max_retries requests, whatever progress each makes, then fails. 0: no retry."`
	MinRetryWait      Duration `toml:"min_retry_wait" comment:"First backoff between retries (doubling, ±25% jitter)."`
	MaxRetryWait      Duration `toml:"max_retry_wait" comment:"Longest backoff between retries."`
	MaxRetryAfter     Duration `toml:"max_retry_after" comment:"Longest wait a 429 or 503 answer may ask for in Retry-After (instead of the backoff)."`
	MaxConcurrency    int      `toml:"max_concurrency" comment:"Concurrent range requests across all layers."`
	MemoryLimit       int64    `toml:"memory_limit" comment:"Bound, in bytes, on the daemon's resident memory that the Go collector works to (a soft limit, as GOMEMLIMIT): the Go runtime gets it minus 20 MiB for the binary's mapped code and an eighth (at most 32 MiB) for free span buffers kept for reuse, which the pool is then bounded to; once mounts settle, the Go share is raised to twice the live heap if that is more, so that many mounted layers never make the collector run back to back. Spans being fetched or read (per layer: background_fetch.parallel and the fetch-ahead window, a few spans each) are outside it. At least 33554432 (32 MiB); 0: no bound (Go's defaults, or GOMEMLIMIT from the environment)."`
	Verify            string   `toml:"verify" comment:"When span digests are checked. strict: no byte reaches a container before its span's sha256 matched (a small read costs a whole span). deferred: a small read is answered from the first bytes of its span, which is verified as it finishes arriving; a mismatch fails the layer."`
}

// Cache configures the span cache.
type Cache struct {
	Dir      string `toml:"dir" comment:"Cache directory; empty means <root>/cache."`
	MaxBytes int64  `toml:"max_bytes" comment:"Cache size limit in bytes; least recently used spans are evicted. 0: no limit."`
}

// BackgroundFetch configures background completion of layers.
type BackgroundFetch struct {
	Enable            bool     `toml:"enable" comment:"Fetch the rest of mounted layers in the background."`
	SilencePeriod     Duration `toml:"silence_period" comment:"Background fetching waits until no file of a lazy layer has been read for this long, so that container start-up reads come first."`
	MaxBytesPerSecond int64    `toml:"max_bytes_per_second" comment:"Bound on the background fetch rate, in compressed bytes per second. 0: no bound."`
	RetryDelay        Duration `toml:"retry_delay" comment:"Wait before retrying a layer whose background fetch failed (registry unreachable)."`
	MaxDeferral       Duration `toml:"max_deferral" comment:"Longest a mounted layer's completion and verification waits for the node to be quiet; after that it proceeds at up to half duty while reads go on, so every layer is verified even on a busy node."`
	StepTimeout       Duration `toml:"step_timeout" comment:"Bound on one background step (one chunk of a layer fetched and verified); a step that takes longer is retried after retry_delay."`
	Policy            string   `toml:"policy" comment:"When mounted layers are completed. full-speed: right after the mount (once a second passed without a mount or a read's transfer, so that a container's start-up reads come first), one layer after the other, with parallel range requests at the link's full bandwidth; a read's transfer breaks background transfers off, and silence_period does not apply. idle: once no file has been read for silence_period, one chunk at a time. Both verify every byte the same way."`
	Parallel          int      `toml:"parallel" comment:"Range requests a full-speed completion keeps in flight."`
}

// Discovery configures index discovery.
type Discovery struct {
	V2                bool              `toml:"v2" comment:"Use SOCI v2 indices, bound by annotation on the image manifest (tried first)."`
	V1                bool              `toml:"v1" comment:"Use SOCI v1 indices, found through the referrers API or the sha256-<digest> tag."`
	V1Trusted         []string          `toml:"v1_trusted_repositories" comment:"Use v1 indices only from these repositories: \"host\" (a whole registry) or \"host/path\" (that repository and those under it), matched against the image's repository and its index_repositories entry. Anyone who can push to a repository can attach a v1 index to its images, even to one pulled by digest, and the index describes what its layers contain; a v2 index is bound by the image manifest's digest and is always used. Empty: v1 indices from any repository."`
	IndexRepositories map[string]string `toml:"index_repositories" comment:"Where to look for the indices of an image repository, e.g. \"registry.example/app\" = \"registry.example/app-soci\"."`
	CacheTTL          Duration          `toml:"cache_ttl" comment:"How long a found index is remembered per image."`
	NegativeCacheTTL  Duration          `toml:"negative_cache_ttl" comment:"How long \"this image has no index\" is remembered."`
	MaxZtocBytes      int64             `toml:"max_ztoc_bytes" comment:"Largest zTOC accepted, in bytes (checked before it is downloaded). A zTOC stays in memory while its layer is mounted; a layer whose zTOC is over this or the next two bounds is unpacked by the daemon instead (reason ztoc-too-large). 0: no bound but the format's 1 GiB."`
	MaxZtocEntries    int64             `toml:"max_ztoc_entries" comment:"Most files (tar entries) a zTOC may list; each costs about 250 bytes of memory (600 with a PAX record) while mounted. 0: no bound."`
	MaxZtocSpans      int64             `toml:"max_ztoc_spans" comment:"Most spans a zTOC may have. 0: no bound."`
	ZtocMemoryBudget  int64             `toml:"ztoc_memory_budget" comment:"Estimated bytes of memory the zTOCs of all mounted layers may take together; a layer that would go over is unpacked by the daemon instead (reason ztoc-memory-budget). An unmounted layer's share is returned at Go's next garbage collection, which is forced (at most once a second) when a layer does not fit. 0: no budget."`
}

// Registry configures registry access.
type Registry struct {
	PlainHTTP    []string `toml:"plain_http" comment:"Registry hosts (host:port) reached over plain HTTP. Loopback hosts always are."`
	DockerConfig string   `toml:"docker_config" comment:"Docker config.json with credentials; empty means $DOCKER_CONFIG or ~/.docker/config.json."`
	ConfigPath   string   `toml:"config_path" comment:"containerd's registry host configuration directory (its config_path): <host>/hosts.toml and _default/hosts.toml, read as containerd reads them, for mirrors, CAs and client certificates of every registry request. A missing directory means none; empty: none."`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Address string `toml:"address" comment:"Serve /metrics on this address; empty disables metrics."`
	Network string `toml:"network" comment:"tcp or unix."`
	// Pprof is off by default: profiles show file names and take CPU.
	Pprof bool `toml:"pprof" comment:"Also serve Go's profiles under /debug/pprof/ on the metrics address (heap, goroutines, CPU), for diagnosing memory or CPU use."`
}

// Parse reads a configuration: values present in r replace the defaults,
// unknown keys are an error, and the result is validated.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config is larger than %d bytes", maxFileSize)
	}
	cfg := Default()
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, fmt.Errorf("unknown config keys:\n%s%s%s", strict.String(), removedHints(strict), sociHint(strict))
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return nil, fmt.Errorf("config line %d column %d: %w", row, col, err)
		}
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// removedHints says what replaced the keys of earlier versions found among
// the unknown ones, so that an upgrade fails with a fix, not a riddle.
func removedHints(strict *toml.StrictMissingError) string {
	var b strings.Builder
	for _, e := range strict.Errors {
		key := strings.Join(e.Key(), ".")
		var hint string
		switch key {
		case "fuse.attr_timeout", "fuse.entry_timeout", "fuse.negative_timeout":
			hint = "replaced by fuse.cache_timeout (one timeout for attributes, entries and failed lookups)"
		case "fetch.verify_retries":
			hint = "removed: a span that does not match its digest fails the layer; it is never fetched again"
		case "background_fetch.fetch_period":
			hint = "replaced by background_fetch.max_bytes_per_second"
		case "background_fetch.max_queue":
			hint = "removed: every mounted layer is completed in turn; none is dropped"
		default:
			continue
		}
		fmt.Fprintf(&b, "\n%s: %s", key, hint)
	}
	return b.String()
}

// Load reads the configuration file at path. A missing file gives an error
// wrapping fs.ErrNotExist; the caller decides whether defaults will do.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Encode writes cfg as TOML, each option preceded by its description.
func (c *Config) Encode(w io.Writer) error {
	enc := toml.NewEncoder(w).SetIndentTables(false)
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return nil
}

// Values of background_fetch.policy.
const (
	// PolicyFullSpeed completes layers right after their mount.
	PolicyFullSpeed = "full-speed"
	// PolicyIdle completes layers once the node is quiet.
	PolicyIdle = "idle"
)

// Values of fetch.verify.
const (
	// VerifyStrict answers reads only from spans whose digest matched.
	VerifyStrict = "strict"
	// VerifyDeferred answers small reads before their span is verified.
	VerifyDeferred = "deferred"
)
