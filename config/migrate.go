package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Migration is what MigrateSoci made of a soci-snapshotter config.toml.
type Migration struct {
	// TOML is an ociseek configuration holding only the keys that were
	// carried over, each after a comment naming the soci-snapshotter key
	// it comes from. Every key missing from it keeps ociseek's default.
	TOML []byte
	// Config is TOML as the daemon will read it (Parse of TOML).
	Config *Config
	// Skipped lists the soci-snapshotter keys not carried over, each with
	// the reason, sorted by key.
	Skipped []Skipped
	// Notes are differences the operator should know about although no
	// key of the file says them (defaults that differ).
	Notes []string
	// Hosts holds, per registry host, the containerd hosts.toml text
	// equivalent to its [resolver.host."HOST"] mirrors, sorted by host.
	Hosts []HostsFile
}

// Skipped is a soci-snapshotter key that has no ociseek equivalent.
type Skipped struct {
	// Key is the key's dotted path in the soci-snapshotter file.
	Key string
	// Reason says why it was not carried over, and what to use instead.
	Reason string
}

// HostsFile is a hosts.toml for one registry host.
type HostsFile struct {
	// Host is the registry host the file configures ("docker.io").
	Host string
	// Text is the file's content.
	Text string
}

// assignment is one ociseek key the migration sets.
type assignment struct {
	table, key string
	value      any // bool, int64, string or []string, as TOML writes it
	from       string
	// priority breaks ties when two soci keys map to one ociseek key
	// (soci's [blob] retry settings override its [http] ones for blob
	// reads): the higher one wins, the other is reported as skipped.
	priority int
}

// migrator collects the outcome of one migration.
type migrator struct {
	set     []assignment
	skipped []Skipped
	notes   []string
	hosts   []HostsFile
}

// skip records a key that is not carried over.
func (m *migrator) skip(key, format string, args ...any) {
	m.skipped = append(m.skipped, Skipped{Key: key, Reason: fmt.Sprintf(format, args...)})
}

// assign records that soci key from sets ociseek key table.key.
func (m *migrator) assign(from, table, key string, value any, priority int) {
	for i, a := range m.set {
		if a.table != table || a.key != key {
			continue
		}
		if a.priority >= priority {
			m.skip(from, "superseded by %s, which also sets %s.%s and takes precedence", a.from, table, key)
			return
		}
		m.skip(a.from, "superseded by %s, which also sets %s.%s and takes precedence", from, table, key)
		m.set[i] = assignment{table: table, key: key, value: value, from: from, priority: priority}
		return
	}
	m.set = append(m.set, assignment{table: table, key: key, value: value, from: from, priority: priority})
}

// MigrateSoci reads a soci-snapshotter config.toml and returns its ociseek
// equivalent. Every key is either carried over or listed in Skipped with
// its reason; an unknown key or a value of the wrong type is skipped, not
// an error. It fails only when data is not TOML (or is too large).
// hostsDir, when not empty, is where the caller writes the Hosts files:
// registry.config_path then points there.
func MigrateSoci(r io.Reader, hostsDir string) (*Migration, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read soci-snapshotter config: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("soci-snapshotter config is larger than %d bytes", maxFileSize)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return nil, fmt.Errorf("soci-snapshotter config line %d column %d: %w", row, col, err)
		}
		return nil, fmt.Errorf("decode soci-snapshotter config: %w", err)
	}
	m := &migrator{}
	if resolver, ok := lookupFold(doc, "resolver"); ok {
		m.resolver(resolver)
	}
	if hostsDir != "" && len(m.hosts) > 0 {
		m.assign("--hosts-dir (where the mirrors' hosts.toml files are written)", "registry", "config_path", hostsDir, 1)
	}
	for _, l := range flatten(doc, nil) {
		if len(l.path) > 0 && strings.EqualFold(l.path[0], "resolver") {
			continue // done above
		}
		m.apply(l)
	}
	m.defaultsNotes(doc)
	return m.finish()
}

// leaf is one key of the soci document with its value.
type leaf struct {
	path  []string // as written in the file
	value any
}

// name is the key's dotted path, segments quoted where TOML needs it.
func (l leaf) name() string { return dotted(l.path) }

// dotted joins a key path as TOML writes it.
func dotted(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if p == "" || strings.ContainsFunc(p, func(r rune) bool {
			return !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
			p = fmt.Sprintf("%q", p)
		}
		parts[i] = p
	}
	return strings.Join(parts, ".")
}

// flatten lists the leaves (non-table values; arrays are leaves) of t
// under prefix, sorted by path so that the report is stable.
func flatten(t map[string]any, prefix []string) []leaf {
	var out []leaf
	for _, k := range sortedKeys(t) {
		path := append(slices.Clone(prefix), k)
		if sub, ok := t[k].(map[string]any); ok && len(sub) > 0 {
			out = append(out, flatten(sub, path)...)
			continue
		}
		out = append(out, leaf{path: path, value: t[k]})
	}
	return out
}

// lookupFold finds key in t ignoring case, as soci-snapshotter's decoder
// matches keys, and returns it if it is a table.
func lookupFold(t map[string]any, key string) (map[string]any, bool) {
	for k, v := range t {
		if strings.EqualFold(k, key) {
			sub, ok := v.(map[string]any)
			return sub, ok
		}
	}
	return nil, false
}

// finish checks each assignment alone against ociseek's validation (a
// value ociseek rejects is skipped with the reason), writes the TOML and
// parses it as the daemon will.
func (m *migrator) finish() (*Migration, error) {
	var kept []assignment
	for _, a := range m.set {
		snippet, err := encodeAssignments([]assignment{a})
		if err == nil {
			_, err = Parse(bytes.NewReader(snippet))
		}
		if err != nil {
			m.skip(a.from, "ociseek rejects the value for %s.%s: %v", a.table, a.key, err)
			continue
		}
		kept = append(kept, a)
	}
	out, err := encodeAssignments(kept)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("the migrated configuration does not hold together: %w", err)
	}
	slices.SortStableFunc(m.skipped, func(a, b Skipped) int { return strings.Compare(a.Key, b.Key) })
	return &Migration{TOML: out, Config: cfg, Skipped: m.skipped, Notes: m.notes, Hosts: m.hosts}, nil
}

// tableOrder is the order of Config's tables, which the output follows.
var tableOrder = []string{"daemon", "snapshotter", "fuse", "fetch", "cache", "background_fetch",
	"discovery", "registry", "metrics", "cri_keychain"}

// encodeAssignments writes as TOML, table by table in Config's order and
// key by key in name order, each key after a comment naming its source.
func encodeAssignments(as []assignment) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# ociseek-snapshotter configuration migrated from a soci-snapshotter config.toml.\n" +
		"# Keys not listed keep ociseek's defaults (see: ociseek-snapshotter config default).\n")
	for _, table := range tableOrder {
		var rows []assignment
		for _, a := range as {
			if a.table == table {
				rows = append(rows, a)
			}
		}
		if len(rows) == 0 {
			continue
		}
		slices.SortFunc(rows, func(x, y assignment) int { return strings.Compare(x.key, y.key) })
		fmt.Fprintf(&b, "\n[%s]\n", table)
		for _, a := range rows {
			line, err := toml.Marshal(map[string]any{a.key: a.value})
			if err != nil {
				return nil, fmt.Errorf("encode %s.%s: %w", a.table, a.key, err)
			}
			fmt.Fprintf(&b, "# from %s\n%s", a.from, line)
		}
	}
	return b.Bytes(), nil
}

// sociOnlyKeys are keys (dotted, lower case) that only a soci-snapshotter
// configuration has; the first segment alone for whole tables.
var sociOnlyKeys = []string{"metrics_address", "metrics_network", "no_prometheus", "debug_address", "metadata_store",
	"skip_check_snapshotter_supported", "http_cache_type", "filesystem_cache_type", "resolve_result_entry", "debug",
	"disable_verification", "allow_no_verification", "max_concurrency", "mount_timeout_sec",
	"fuse_metrics_emit_wait_duration_sec", "http", "blob", "directory_cache", "content_store", "pull_modes",
	"kubeconfig_keychain", "resolver", "cri_keychain.enable_keychain"}

// sociHint suggests the migration when an unknown key is one of
// soci-snapshotter's: its config.toml is the likeliest file an operator
// moving over points the daemon at.
func sociHint(strict *toml.StrictMissingError) string {
	for _, e := range strict.Errors {
		key := strings.ToLower(strings.Join(e.Key(), "."))
		first, _, _ := strings.Cut(key, ".")
		if slices.Contains(sociOnlyKeys, key) || slices.Contains(sociOnlyKeys, first) {
			return "\nThis looks like a soci-snapshotter config.toml: " +
				"`ociseek-snapshotter config migrate FILE` writes its ociseek equivalent and lists what does not carry over."
		}
	}
	return ""
}
