package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestDefaultRoundTrips checks that what `config default` prints parses
// back to Default(), so the printed file is a faithful starting point.
func TestDefaultRoundTrips(t *testing.T) {
	var buf bytes.Buffer
	if err := Default().Encode(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("parse default config: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("round trip changed the config:\ngot  %+v\nwant %+v", got, Default())
	}
	for _, want := range []string{"[fuse]", `mount_timeout = '30s'`, "# Serve indexed layers lazily", "[discovery.index_repositories]"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("default output lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseOverridesOnlyGivenKeys(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`
[fuse]
mount_timeout = "1m30s"
[registry]
plain_http = ["localhost:5000"]
[discovery.index_repositories]
"reg.example/app" = "reg.example/app-soci"
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FUSE.MountTimeout.Duration != 90*time.Second {
		t.Errorf("mount_timeout = %v", cfg.FUSE.MountTimeout.Duration)
	}
	if cfg.FUSE.CacheTimeout != Default().FUSE.CacheTimeout || cfg.Daemon.Root != "/var/lib/ociseek" {
		t.Errorf("defaults lost: %+v %+v", cfg.FUSE, cfg.Daemon)
	}
	if cfg.Discovery.IndexRepositories["reg.example/app"] != "reg.example/app-soci" || cfg.Registry.PlainHTTP[0] != "localhost:5000" {
		t.Errorf("discovery/registry = %+v %+v", cfg.Discovery, cfg.Registry)
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"unknown key":       {"[fuse]\nmount_timout = \"1s\"\n", "mount_timout"},
		"unknown section":   {"[fusee]\n", "fusee"},
		"integer duration":  {"[fuse]\nmount_timeout = 30\n", "Go duration"},
		"bad duration":      {"[fuse]\nmount_timeout = \"30\"\n", "Go duration"},
		"negative duration": {"[fuse]\ncache_timeout = \"-1s\"\n", "fuse.cache_timeout"},
		"zero retry delay":  {"[background_fetch]\nretry_delay = \"0s\"\n", "background_fetch.retry_delay"},
		"negative min size": {"[snapshotter]\nmin_layer_size = -1\n", "snapshotter.min_layer_size"},
		"negative rate":     {"[background_fetch]\nmax_bytes_per_second = -5\n", "background_fetch.max_bytes_per_second"},
		"zero timeout":      {"[fetch]\nrequest_timeout = \"0s\"\n", "fetch.request_timeout"},
		"relative root":     {"[daemon]\nroot = \"var/lib\"\n", "daemon.root"},
		"log level":         {"[daemon]\nlog_level = \"loud\"\n", "daemon.log_level"},
		"wrong type":        {"[snapshotter]\nlazy = \"yes\"\n", "line 2"},
		"syntax":            {"[fuse\n", "line 1"},
		"html":              {"<html><body>404</body></html>", "line 1"},
		"bad repo map":      {"[discovery.index_repositories]\n\"app\" = \"x/y\"\n", "index_repositories"},
		"removed key":       {"[fuse]\nattr_timeout = \"1s\"\n", "fuse.attr_timeout: replaced by fuse.cache_timeout"},
		"removed fetch key": {"[background_fetch]\nmax_queue = 3\n", "background_fetch.max_queue: removed"},
		"no discovery":      {"[discovery]\nv1 = false\nv2 = false\n", "snapshotter.lazy = false"},
		"verify mode":       {"[fetch]\nverify = \"lazy\"\n", "fetch.verify"},
		"trusted with tag":  {"[discovery]\nv1_trusted_repositories = [\"reg.example/app:1\"]\n", "discovery.v1_trusted_repositories"},
		"trusted url":       {"[discovery]\nv1_trusted_repositories = [\"https://reg.example\"]\n", "discovery.v1_trusted_repositories"},
		"trusted empty":     {"[discovery]\nv1_trusted_repositories = [\"\"]\n", "discovery.v1_trusted_repositories"},
		"negative budget":   {"[discovery]\nztoc_memory_budget = -1\n", "discovery.ztoc_memory_budget"},
		"negative entries":  {"[discovery]\nmax_ztoc_entries = -1\n", "discovery.max_ztoc_entries"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse = %v, want error mentioning %q", err, c.want)
			}
		})
	}
}

// TestDiscoveryTrustAndBounds: the v1 trust list and the zTOC bounds are
// read as written, and the defaults bound zTOCs and trust every
// repository, as before these keys existed.
func TestDiscoveryTrustAndBounds(t *testing.T) {
	d := Default().Discovery
	if len(d.V1Trusted) != 0 || d.MaxZtocBytes != 64<<20 || d.MaxZtocEntries != 500_000 || d.MaxZtocSpans != 16_384 || d.ZtocMemoryBudget != 1<<30 {
		t.Errorf("discovery defaults = %+v", d)
	}
	cfg, err := Parse(strings.NewReader(`
[discovery]
v1_trusted_repositories = ["reg.example/team/", "mirror.example:5000", "reg.example/ops/..."]
max_ztoc_bytes = 0
ztoc_memory_budget = 268435456
`))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Discovery
	if !reflect.DeepEqual(got.V1Trusted, []string{"reg.example/team/", "mirror.example:5000", "reg.example/ops/..."}) ||
		got.MaxZtocBytes != 0 || got.ZtocMemoryBudget != 256<<20 || got.MaxZtocEntries != 500_000 {
		t.Errorf("discovery = %+v", got)
	}
}

func TestParseRejectsHugeInput(t *testing.T) {
	_, err := Parse(bytes.NewReader(make([]byte, maxFileSize+10)))
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Parse of a huge file = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want fs.ErrNotExist", err)
	}
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte("[metrics]\naddress = \"127.0.0.1:9109\"\n"), 0o644)
	cfg, err := Load(p)
	if err != nil || cfg.Metrics.Address != "127.0.0.1:9109" {
		t.Errorf("Load = %+v, %v", cfg, err)
	}
	os.WriteFile(p, []byte("[metrics]\nnetwork = \"udp\"\n"), 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load of an invalid file = %v, want error naming the file", err)
	}
}

// FuzzParse: whatever the bytes, Parse returns a valid config or an error.
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	Default().Encode(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("[fuse]\nmount_timeout = \"1s\"\n"))
	f.Add([]byte("[discovery.index_repositories]\n\"a/b\" = \"c/d\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
	})
}
