package config

import (
	"fmt"
	"strings"
	"time"
)

// The soci-snapshotter keys known here are those of its config package
// (config.go, fs.go, service.go, pull_modes.go, parallel.go, resolver.go)
// and of the example config/config.toml in awslabs/soci-snapshotter, as of
// v0.10-v0.12. Its decoder matches keys ignoring case ([http] keys are
// written MaxRetries there), so this file does too.

// sociRule migrates one soci-snapshotter key: from is the key as written,
// v its value.
type sociRule func(m *migrator, from string, v any)

// sociRules maps a lower-cased dotted soci-snapshotter key to its rule.
var sociRules = map[string]sociRule{
	// config.go
	"metrics_address": str(func(m *migrator, from, s string) { m.assign(from, "metrics", "address", s, 0) }),
	"metrics_network": str(func(m *migrator, from, s string) { m.assign(from, "metrics", "network", s, 0) }),
	"no_prometheus": boolean(func(m *migrator, from string, on bool) {
		if on {
			// Wins over metrics_address: soci serves no metrics then.
			m.assign(from, "metrics", "address", "", 1)
		} else {
			m.skip(from, "false: metrics are served when metrics_address is set, as in ociseek")
		}
	}),
	"debug_address":                    unmapped("ociseek serves Go's profiles on the metrics address instead: set metrics.pprof = true"),
	"metadata_store":                   unmapped("ociseek keeps its metadata in one bbolt database under daemon.root; there is no choice to make"),
	"skip_check_snapshotter_supported": unmapped("ociseek makes no such start-up check"),
	// fs.go, top level
	"http_cache_type":       unmapped("ociseek has one on-disk span cache: [cache] dir and max_bytes"),
	"filesystem_cache_type": unmapped("ociseek has one on-disk span cache: [cache] dir and max_bytes"),
	"resolve_result_entry":  unmapped("ociseek caches discovery results for a time instead: discovery.cache_ttl"),
	"debug": boolean(func(m *migrator, from string, on bool) {
		if on {
			m.assign(from, "daemon", "log_level", "debug", 0)
		} else {
			m.skip(from, "false: ociseek logs at daemon.log_level = \"info\" by default")
		}
	}),
	"disable_verification":  refuseNoVerify,
	"allow_no_verification": refuseNoVerify,
	"max_concurrency": unmapped("soci-snapshotter bounds the layers resolved at once; ociseek bounds range requests " +
		"across all layers instead (fetch.max_concurrency, default 64)"),
	"mount_timeout_sec": seconds("fuse", "mount_timeout", time.Second),
	"fuse_metrics_emit_wait_duration_sec": unmapped("ociseek's FUSE metrics are counters updated as operations happen; " +
		"there is nothing to wait for"),
	// [http]: soci's registry client; ociseek's range reads use [fetch].
	"http.maxretries":                integer("fetch", "max_retries", 0),
	"http.minwaitmsec":               seconds("fetch", "min_retry_wait", time.Millisecond),
	"http.maxwaitmsec":               seconds("fetch", "max_retry_wait", time.Millisecond),
	"http.requesttimeoutmsec":        seconds("fetch", "request_timeout", time.Millisecond),
	"http.dialtimeoutmsec":           unmapped("connecting counts in fetch.request_timeout and fetch.min_rate_window; there is no separate bound"),
	"http.responseheadertimeoutmsec": unmapped("the wait for headers counts in fetch.min_rate_window (a request must bring bytes every window from its start)"),
	// [blob]: soci applies these to blob fetches over the [http] ones.
	"blob.max_retries":          integer("fetch", "max_retries", 1),
	"blob.min_wait_msec":        seconds("fetch", "min_retry_wait", time.Millisecond, 1),
	"blob.max_wait_msec":        seconds("fetch", "max_retry_wait", time.Millisecond, 1),
	"blob.fetching_timeout_sec": seconds("fetch", "request_timeout", time.Second, 1),
	"blob.valid_interval": unmapped("ociseek checks a layer's registry when containerd asks (Check) and after a failed read, " +
		"not on an interval"),
	"blob.check_always":            unmapped("ociseek checks a layer's registry when containerd asks (Check) and after a failed read"),
	"blob.force_single_range_mode": unmapped("ociseek always asks one range per request"),
	"blob.max_span_verification_retries": unmapped("a span that does not match its digest fails the layer in ociseek; " +
		"it is never fetched again"),
	// [fuse]
	"fuse.attr_timeout":        fuseTimeout,
	"fuse.entry_timeout":       fuseTimeout,
	"fuse.negative_timeout":    fuseTimeout,
	"fuse.log_fuse_operations": flagTo("fuse", "debug"),
	// [background_fetch]
	"background_fetch.disable": boolean(func(m *migrator, from string, off bool) {
		m.assign(from, "background_fetch", "enable", !off, 0)
	}),
	"background_fetch.silence_period_msec": seconds("background_fetch", "silence_period", time.Millisecond),
	"background_fetch.fetch_period_msec": unmapped("soci fetched one span per period; ociseek bounds the rate instead: " +
		"background_fetch.max_bytes_per_second (and policy = \"idle\" to wait for quiet)"),
	"background_fetch.max_queue_size":         unmapped("every mounted layer is completed in turn in ociseek; none is dropped"),
	"background_fetch.emit_metric_period_sec": unmapped("ociseek's metrics are updated as they happen"),
	// [content_store]
	"content_store.type": unmapped("ociseek keeps fetched spans in its own cache and leaves containerd's content store " +
		"to containerd"),
	"content_store.containerd_address": unmapped("ociseek does not use containerd's content store"),
	"content_store.namespace":          unmapped("ociseek does not use containerd's content store"),
	// [pull_modes]
	"pull_modes.soci_v1.enable": flagTo("discovery", "v1"),
	"pull_modes.soci_v2.enable": flagTo("discovery", "v2"),
	// service.go
	"kubeconfig_keychain.enable_keychain": unmapped("not supported: kubelet hands image pull secrets to the daemon " +
		"through [cri_keychain]"),
	"kubeconfig_keychain.kubeconfig_path":         unmapped("not supported: use [cri_keychain]"),
	"cri_keychain.enable_keychain":                flagTo("cri_keychain", "enable"),
	"cri_keychain.image_service_path":             str(criImageService),
	"snapshotter.min_layer_size":                  integer("snapshotter", "min_layer_size", 0),
	"snapshotter.allow_invalid_mounts_on_restart": flagTo("snapshotter", "allow_invalid_mounts_on_restart"),
	// The CRI registry types the example config lists; soci ignores them
	// at the top level.
	"registry.config_path": str(func(m *migrator, from, s string) {
		if s == "" {
			m.skip(from, "empty: soci-snapshotter then reads no hosts.toml; ociseek reads registry.config_path "+
				"(default /etc/containerd/certs.d, a missing directory meaning none); set it to \"\" to read none")
			return
		}
		m.assign(from, "registry", "config_path", s, 0)
	}),
}

// sociPrefixes gives a reason for whole tables ociseek has no use for.
var sociPrefixes = []struct{ prefix, reason string }{
	{"pull_modes.parallel_pull_unpack.", "ociseek does not replace containerd's pull of unindexed images; " +
		"snapshotter.local_unpack covers layers of indexed images that have no zTOC"},
	{"directory_cache.", "ociseek's span cache is bounded in bytes (cache.max_bytes), not in entries or descriptors"},
	{"registry.mirrors", "CRI's deprecated registry mirrors: write hosts.toml files (containerd's config_path) instead"},
	{"registry.configs", "CRI's deprecated registry auth and TLS: use hosts.toml for TLS and [cri_keychain] or the docker config for credentials"},
	{"mirror.", "not a soci-snapshotter setting (its example lists CRI's registry types); ignored by soci-snapshotter too"},
	{"registryconfig.", "not a soci-snapshotter setting (its example lists CRI's registry types); ignored by soci-snapshotter too"},
	{"auth.", "not a soci-snapshotter setting (its example lists CRI's registry types); ignored by soci-snapshotter too"},
	{"tls.", "not a soci-snapshotter setting (its example lists CRI's registry types); ignored by soci-snapshotter too"},
}

// apply migrates one leaf of the soci document.
func (m *migrator) apply(l leaf) {
	key := strings.ToLower(strings.Join(l.path, "."))
	if rule, ok := sociRules[key]; ok {
		rule(m, l.name(), l.value)
		return
	}
	for _, p := range sociPrefixes {
		if strings.HasPrefix(key, p.prefix) {
			m.skip(l.name(), "%s", p.reason)
			return
		}
	}
	if t, ok := l.value.(map[string]any); ok && len(t) == 0 {
		return // an empty table sets nothing
	}
	m.skip(l.name(), "unknown to soci-snapshotter (which ignores unknown keys); nothing to carry over")
}

// refuseNoVerify is the rule of the keys that turn verification off.
func refuseNoVerify(m *migrator, from string, v any) {
	if on, ok := v.(bool); ok && !on {
		m.skip(from, "false: ociseek verifies every span, as soci-snapshotter does by default")
		return
	}
	m.skip(from, "ociseek always checks every span against its zTOC digest; this cannot be turned off")
}

// unmapped is the rule of a key without an ociseek equivalent.
func unmapped(reason string) sociRule {
	return func(m *migrator, from string, _ any) { m.skip(from, "%s", reason) }
}

// str is a rule for a string key.
func str(f func(m *migrator, from, s string)) sociRule {
	return func(m *migrator, from string, v any) {
		s, ok := v.(string)
		if !ok {
			m.skip(from, "expected a string, got %s", describe(v))
			return
		}
		f(m, from, s)
	}
}

// boolean is a rule for a boolean key.
func boolean(f func(m *migrator, from string, on bool)) sociRule {
	return func(m *migrator, from string, v any) {
		on, ok := v.(bool)
		if !ok {
			m.skip(from, "expected true or false, got %s", describe(v))
			return
		}
		f(m, from, on)
	}
}

// flagTo copies a boolean key to table.key.
func flagTo(table, key string) sociRule {
	return boolean(func(m *migrator, from string, on bool) { m.assign(from, table, key, on, 0) })
}

// nonZero reads a soci integer key for table.key; soci-snapshotter reads
// 0 as "its default", so a 0 (or a value of another type) is skipped.
func nonZero(m *migrator, from string, v any, table, key string) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		m.skip(from, "expected an integer, got %s", describe(v))
		return 0, false
	}
	if n == 0 {
		m.skip(from, "0: soci-snapshotter's built-in default; ociseek's default %s.%s applies", table, key)
		return 0, false
	}
	return n, true
}

// integer copies a non-zero integer key to table.key.
func integer(table, key string, priority int) sociRule {
	return func(m *migrator, from string, v any) {
		if n, ok := nonZero(m, from, v, table, key); ok {
			m.assign(from, table, key, n, priority)
		}
	}
}

// seconds writes a non-zero integer key counted in unit as a duration in
// table.key (priority optional).
func seconds(table, key string, unit time.Duration, priority ...int) sociRule {
	prio := 0
	if len(priority) > 0 {
		prio = priority[0]
	}
	return func(m *migrator, from string, v any) {
		n, ok := nonZero(m, from, v, table, key)
		if !ok {
			return
		}
		if n < 0 || n > int64(1<<62)/int64(unit) {
			m.skip(from, "%d is out of range for a duration (ociseek has no \"unbounded\" here)", n)
			return
		}
		m.assign(from, table, key, (time.Duration(n) * unit).String(), prio)
	}
}

// fuseTimeout merges soci's three FUSE cache timeouts (seconds) into
// fuse.cache_timeout, keeping the smallest: it is the one the operator
// needed to hold.
func fuseTimeout(m *migrator, from string, v any) {
	n, ok := v.(int64)
	switch {
	case !ok:
		m.skip(from, "expected an integer, got %s", describe(v))
		return
	case n <= 0:
		m.skip(from, "%d: soci-snapshotter's default (1 s); ociseek's fuse.cache_timeout default applies "+
			"(a mounted layer never changes, so the kernel may cache it)", n)
		return
	case n > int64(1<<62)/int64(time.Second):
		m.skip(from, "%d is out of range for a duration", n)
		return
	}
	d := time.Duration(n) * time.Second
	for i, a := range m.set {
		if a.table != "fuse" || a.key != "cache_timeout" {
			continue
		}
		prev, _ := time.ParseDuration(a.value.(string))
		if d < prev {
			m.skip(a.from, "merged into fuse.cache_timeout, which takes the smallest of soci's three FUSE timeouts (%s)", from)
			m.set[i] = assignment{table: "fuse", key: "cache_timeout", value: d.String(), from: from}
		} else {
			m.skip(from, "merged into fuse.cache_timeout, which takes the smallest of soci's three FUSE timeouts (%s)", a.from)
		}
		return
	}
	m.assign(from, "fuse", "cache_timeout", d.String(), 0)
}

// criImageService carries image_service_path over; soci's empty value
// means containerd's default socket, ociseek's default too.
func criImageService(m *migrator, from, s string) {
	if s == "" {
		m.skip(from, "empty: soci-snapshotter then uses /run/containerd/containerd.sock, ociseek's default too")
		return
	}
	m.assign(from, "cri_keychain", "image_service_path", strings.TrimPrefix(s, "unix://"), 0)
}

// describe names a TOML value's type for a message.
func describe(v any) string {
	switch v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case int64:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the number %v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// defaultsNotes reports defaults that differ between the two daemons when
// the file leaves them unset.
func (m *migrator) defaultsNotes(doc map[string]any) {
	modes, _ := lookupFold(doc, "pull_modes")
	v1, _ := lookupFold(modes, "soci_v1")
	if _, set := lookupValueFold(v1, "enable"); !set {
		m.notes = append(m.notes, "pull_modes.soci_v1.enable is not set: soci-snapshotter then leaves SOCI v1 indices "+
			"(referrers API) unused, while ociseek's discovery.v1 uses them by default; add discovery.v1 = false to keep them unused")
	}
}

// lookupValueFold finds key in t ignoring case.
func lookupValueFold(t map[string]any, key string) (any, bool) {
	for k, v := range t {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}
