package config

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	hostsconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/pelletier/go-toml/v2"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of the migration tests")

// sociSample is a soci-snapshotter config.toml written for these tests
// (testdata/migrate/soci-config.toml says where its keys come from).
const sociSample = "testdata/migrate/soci-config.toml"

func migrateFile(t *testing.T, path string) *Migration {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := MigrateSoci(f, "")
	if err != nil {
		t.Fatalf("migrate %s: %v", path, err)
	}
	return m
}

// report renders what the verb prints on stderr, for the golden file.
func report(m *Migration) string {
	var b strings.Builder
	for _, s := range m.Skipped {
		fmt.Fprintf(&b, "%s: %s\n", s.Key, s.Reason)
	}
	for _, n := range m.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, h := range m.Hosts {
		fmt.Fprintf(&b, "hosts.toml for %s:\n%s", h.Host, h.Text)
	}
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run Migrate -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test ./config -run Migrate -update rewrites it); got:\n%s", path, got)
	}
}

// TestMigrateSociGolden migrates the sample and compares the ociseek
// file and the report with golden copies; then checks the values the
// daemon will read.
func TestMigrateSociGolden(t *testing.T) {
	m := migrateFile(t, sociSample)
	golden(t, "testdata/migrate/soci-config.migrated.toml", string(m.TOML))
	golden(t, "testdata/migrate/soci-config.report.txt", report(m))

	c := m.Config
	checks := []struct {
		key       string
		got, want any
	}{
		{"daemon.log_level", c.Daemon.LogLevel, "debug"},
		{"metrics.address", c.Metrics.Address, "127.0.0.1:8000"},
		{"fuse.mount_timeout", c.FUSE.MountTimeout.Duration, 45 * time.Second},
		{"fuse.cache_timeout", c.FUSE.CacheTimeout.Duration, 2 * time.Second},
		{"fetch.max_retries", c.Fetch.MaxRetries, 6},
		{"fetch.min_retry_wait", c.Fetch.MinRetryWait.Duration, 100 * time.Millisecond},
		{"fetch.max_retry_wait", c.Fetch.MaxRetryWait.Duration, 20 * time.Second},
		{"fetch.request_timeout", c.Fetch.RequestTimeout.Duration, 5 * time.Minute},
		{"background_fetch.silence_period", c.BackgroundFetch.SilencePeriod.Duration, 10 * time.Second},
		{"discovery.v1", c.Discovery.V1, true},
		{"snapshotter.min_layer_size", c.Snapshotter.MinLayerSize, int64(10_000_000)},
		{"snapshotter.allow_invalid_mounts_on_restart", c.Snapshotter.AllowInvalidMountsOnRestart, true},
		{"cri_keychain.enable", c.CRIKeychain.Enable, true},
		{"registry.config_path", c.Registry.ConfigPath, "/etc/containerd/certs.d"},
		{"cri_keychain.image_service_path", c.CRIKeychain.ImageServicePath, "/run/containerd/containerd.sock"},
		// Not in the file: ociseek's default.
		{"cache.max_bytes", c.Cache.MaxBytes, Default().Cache.MaxBytes},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.key, ch.got, ch.want)
		}
	}
}

// TestMigrateHostsDir: with the directory the hosts.toml files go to,
// registry.config_path points there, over the file's own config_path.
func TestMigrateHostsDir(t *testing.T) {
	f, err := os.Open(sociSample)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := MigrateSoci(f, "/srv/certs.d")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Config.Registry.ConfigPath; got != "/srv/certs.d" {
		t.Errorf("registry.config_path = %q, want the hosts directory /srv/certs.d", got)
	}
	i := slices.IndexFunc(m.Skipped, func(s Skipped) bool { return s.Key == "registry.config_path" })
	if i < 0 || !strings.Contains(m.Skipped[i].Reason, "superseded by --hosts-dir") {
		t.Errorf("the file's registry.config_path is not reported as superseded: %+v", m.Skipped)
	}
}

// TestMigrateAccountsForEveryKey: each key of the sample is either carried
// over (named in a "# from" comment), skipped with a reason, or one of
// the resolver mirrors that became hosts.toml text.
func TestMigrateAccountsForEveryKey(t *testing.T) {
	data, err := os.ReadFile(sociSample)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	m := migrateFile(t, sociSample)
	from := map[string]bool{}
	for _, line := range strings.Split(string(m.TOML), "\n") {
		if k, ok := strings.CutPrefix(line, "# from "); ok {
			from[k] = true
		}
	}
	skipped := map[string]bool{}
	for _, s := range m.Skipped {
		if s.Reason == "" {
			t.Errorf("%s skipped without a reason", s.Key)
		}
		skipped[s.Key] = true
	}
	for _, l := range flatten(doc, nil) {
		name := l.name()
		if strings.HasPrefix(name, "resolver.") {
			continue
		}
		if from[name] == skipped[name] {
			t.Errorf("%s: carried over %v, skipped %v; want exactly one", name, from[name], skipped[name])
		}
	}
	if len(m.Hosts) != 2 {
		t.Errorf("hosts.toml files for %d hosts, want 2 (docker.io, ghcr.io)", len(m.Hosts))
	}
}

// TestMigratedHostsReadByContainerd loads the hosts.toml text with
// containerd's own parser: docker.io's mirrors come first, in soci's
// order and with soci's insecure as plain HTTP, then Docker Hub.
func TestMigratedHostsReadByContainerd(t *testing.T) {
	m := migrateFile(t, sociSample)
	dir := t.TempDir()
	for _, h := range m.Hosts {
		if err := os.MkdirAll(filepath.Join(dir, h.Host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, h.Host, "hosts.toml"), []byte(h.Text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hosts := hostsconfig.ConfigureHosts(context.Background(), hostsconfig.HostOptions{HostDir: hostsconfig.HostDirFromRoot(dir)})
	got, err := hosts("docker.io")
	if err != nil {
		t.Fatalf("containerd reads the migrated hosts.toml: %v", err)
	}
	var seen []string
	for _, h := range got {
		seen = append(seen, h.Scheme+"://"+h.Host)
	}
	want := []string{"http://mirror.internal.example:5000", "https://pull-through.example.com", "https://registry-1.docker.io"}
	if !slices.Equal(seen, want) {
		t.Errorf("docker.io hosts = %v, want %v", seen, want)
	}
	for _, h := range got[:2] {
		if want := docker.HostCapabilityPull | docker.HostCapabilityResolve; h.Capabilities != want {
			t.Errorf("mirror %s capabilities %b, want pull and resolve", h.Host, h.Capabilities)
		}
	}
}

// TestParseSuggestsMigrate: a soci-snapshotter file given to the daemon is
// still refused, and the error says how to migrate it; an ociseek file
// with a typo is refused without that suggestion.
func TestParseSuggestsMigrate(t *testing.T) {
	data, err := os.ReadFile(sociSample)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(bytes.NewReader(data))
	if err == nil || !strings.Contains(err.Error(), "ociseek-snapshotter config migrate FILE") {
		t.Errorf("Parse of a soci-snapshotter config: %v, want the migrate suggestion", err)
	}
	_, err = Parse(strings.NewReader("[fetch]\nmax_retrys = 3\n"))
	if err == nil || strings.Contains(err.Error(), "migrate") {
		t.Errorf("Parse of an ociseek config with a typo: %v, want an error without the migrate suggestion", err)
	}
}

// TestMigrateOddInput: unknown keys, wrong types, out-of-range values and
// zeros are reported, never fatal; soci's default for v1 is noted when
// the file leaves it unset.
func TestMigrateOddInput(t *testing.T) {
	in := `
no_prometheus = true
metrics_address = "0.0.0.0:9000"
mount_timeout_sec = "forty"
debug = 1
[http]
maxretries = -3
MinWaitMsec = 0
[fuse]
attr_timeout = 99999999999999999
[background_fetch]
silence_period_msec = -5
[resolver.host."r.example"]
  [[resolver.host."r.example".mirrors]]
    insecure = true
  [[resolver.host."r.example".mirrors]]
    host = "m.example"
    weight = 3
[something_new]
x = [1, 2]
`
	m, err := MigrateSoci(strings.NewReader(in), "")
	if err != nil {
		t.Fatalf("MigrateSoci: %v", err)
	}
	reasons := map[string]string{}
	for _, s := range m.Skipped {
		reasons[s.Key] = s.Reason
	}
	for key, want := range map[string]string{
		"mount_timeout_sec":                           "expected an integer",
		"debug":                                       "expected true or false",
		"http.maxretries":                             "ociseek rejects the value",
		"http.MinWaitMsec":                            "0: soci-snapshotter's built-in default",
		"fuse.attr_timeout":                           "out of range",
		"background_fetch.silence_period_msec":        "out of range",
		`resolver.host."r.example".mirrors[0]`:        "without host",
		`resolver.host."r.example".mirrors[1].weight`: "unknown",
		"something_new.x":                             "unknown to soci-snapshotter",
		"metrics_address":                             "superseded by no_prometheus",
	} {
		if !strings.Contains(reasons[key], want) {
			t.Errorf("%s: reason %q, want it to say %q", key, reasons[key], want)
		}
	}
	if m.Config.Metrics.Address != "" {
		t.Errorf("metrics.address = %q; no_prometheus = true must turn metrics off", m.Config.Metrics.Address)
	}
	if len(m.Notes) != 1 || !strings.Contains(m.Notes[0], "discovery.v1 = false") {
		t.Errorf("notes = %q, want the SOCI v1 default difference", m.Notes)
	}
	if len(m.Hosts) != 1 || !strings.Contains(m.Hosts[0].Text, `[host.'https://m.example']`) {
		t.Errorf("hosts = %+v, want r.example with mirror m.example", m.Hosts)
	}
	if _, err := MigrateSoci(strings.NewReader("a = ["), ""); err == nil || !regexp.MustCompile(`line \d+ column \d+`).MatchString(err.Error()) {
		t.Errorf("MigrateSoci of broken TOML: %v, want an error with its position", err)
	}
}

// FuzzMigrateSoci: any input either fails as TOML or migrates to a file
// the daemon accepts, and nothing panics.
func FuzzMigrateSoci(f *testing.F) {
	if data, err := os.ReadFile(sociSample); err == nil {
		f.Add(data)
	}
	f.Add([]byte("[fuse]\nattr_timeout = 3\nentry_timeout = 1\n"))
	f.Add([]byte("[[resolver.host.\"a\".mirrors]]\nhost = \"b\"\n"))
	f.Add([]byte("[http]\nMaxWaitMsec = 1\n[blob]\nmin_wait_msec = 50\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := MigrateSoci(bytes.NewReader(data), "")
		if err != nil {
			return
		}
		if _, err := Parse(bytes.NewReader(m.TOML)); err != nil {
			t.Fatalf("migrated config is refused: %v\n%s", err, m.TOML)
		}
	})
}
