package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sociSample is config's soci-snapshotter sample and migratedGolden what
// it migrates to.
const (
	sociSample     = "../../config/testdata/migrate/soci-config.toml"
	migratedGolden = "../../config/testdata/migrate/soci-config.migrated.toml"
)

// TestConfigMigrateVerb runs `config migrate` as an operator would: the
// ociseek file on stdout (the golden one), what did not carry over and the
// hosts.toml text on stderr; the daemon then starts its configuration
// check on the output. The soci file itself is refused by the daemon with
// the suggestion to migrate it.
func TestConfigMigrateVerb(t *testing.T) {
	want, err := os.ReadFile(migratedGolden)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := runMigrate([]string{sociSample}, &stdout, &stderr); err != nil {
		t.Fatalf("config migrate: %v", err)
	}
	if stdout.String() != string(want) {
		t.Errorf("config migrate printed:\n%s\nwant %s", stdout.String(), migratedGolden)
	}
	for _, s := range []string{
		"Not carried over (",
		"  blob.max_span_verification_retries: a span that does not match its digest fails the layer",
		"  backgroud_fetch.disable: unknown to soci-snapshotter",
		"hosts.toml for docker.io (write it to <config_path>/docker.io/hosts.toml",
		"    [host.'http://mirror.internal.example:5000']",
	} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("config migrate's report lacks %q:\n%s", s, stderr.String())
		}
	}

	// The output is a configuration the daemon accepts.
	out := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(out, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	if err := run(context.Background(), []string{"--config", out, "config", "dump"}, &dump); err != nil {
		t.Fatalf("config dump of the migrated file: %v", err)
	}
	if !strings.Contains(dump.String(), "min_layer_size = 10000000") {
		t.Errorf("config dump of the migrated file lacks the migrated min_layer_size:\n%s", dump.String())
	}
	err = run(context.Background(), []string{"--config", sociSample, "config", "dump"}, &dump)
	if err == nil || !strings.Contains(err.Error(), "config migrate") {
		t.Errorf("daemon given the soci-snapshotter file: %v, want a refusal that suggests config migrate", err)
	}
}

// TestConfigMigrateWritesFiles: -o and --hosts-dir write the files, and a
// second run overwrites neither (they may be the node's live ones).
func TestConfigMigrateWritesFiles(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ociseek.toml")
	hosts := filepath.Join(dir, "certs.d")
	var stdout, stderr bytes.Buffer
	if err := runMigrate([]string{"-o", out, sociSample, "--hosts-dir", hosts}, &stdout, &stderr); err != nil {
		t.Fatalf("config migrate -o --hosts-dir: %v\n%s", err, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("config migrate -o also printed %q", stdout.String())
	}
	for _, h := range []string{"docker.io", "ghcr.io"} {
		p := filepath.Join(hosts, h, "hosts.toml")
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "capabilities") {
			t.Errorf("%s: %q, %v", p, b, err)
		}
		if !strings.Contains(stderr.String(), "Wrote "+p) {
			t.Errorf("report does not say %s was written:\n%s", p, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "hosts.toml for docker.io (write it") {
		t.Errorf("report prints hosts.toml text that was written to files:\n%s", stderr.String())
	}
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "config_path = '"+hosts+"'") {
		t.Errorf("-o file: %v; want registry.config_path = %s, where the hosts.toml files went:\n%s", err, hosts, b)
	}
	stderr.Reset()
	if err := runMigrate([]string{"-o", out, sociSample}, &stdout, &stderr); err == nil {
		t.Error("a second migrate overwrote the -o file")
	}
	err := runMigrate([]string{"--hosts-dir", hosts, sociSample}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "exists") || !strings.Contains(stderr.String(), "hosts.toml for docker.io (write it") {
		t.Errorf("a second migrate into the same hosts dir: %v, want 'exists' and the text printed instead:\n%s", err, stderr.String())
	}
	if err := runMigrate(nil, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "want one") {
		t.Errorf("config migrate without a file: %v", err)
	}
}
