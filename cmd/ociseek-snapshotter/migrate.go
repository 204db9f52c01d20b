package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ociseek/ociseek/config"
)

const migrateUsage = `Usage: ociseek-snapshotter config migrate [-o FILE] [--hosts-dir DIR] SOCI_CONFIG

Reads a soci-snapshotter config.toml (usually /etc/soci-snapshotter-grpc/config.toml)
and writes the ociseek configuration equivalent to every key that has one, each
after a comment naming its source, to standard output or FILE. Keys that do not
carry over are listed on standard error with the reason; unknown keys never stop
the migration. [resolver.host."HOST"] mirrors become containerd hosts.toml files:
printed on standard error, or written to DIR/HOST/hosts.toml with --hosts-dir.

Flags:
`

// runMigrate is `config migrate`: args are what follows the verb.
func runMigrate(args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("config migrate", flag.ContinueOnError)
	fset.SetOutput(stderr)
	out := fset.String("o", "", "write the ociseek configuration to `FILE` (created; never overwritten) instead of standard output")
	hostsDir := fset.String("hosts-dir", "", "write the hosts.toml files under `DIR` (containerd's config_path, e.g. /etc/containerd/certs.d) instead of printing them")
	fset.Usage = func() {
		fmt.Fprint(stderr, migrateUsage)
		fset.PrintDefaults()
	}
	var pos []string
	for {
		if err := fset.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return fmt.Errorf("config migrate: %w", err)
		}
		if fset.NArg() == 0 {
			break
		}
		pos, args = append(pos, fset.Arg(0)), fset.Args()[1:]
	}
	if len(pos) != 1 {
		fset.Usage()
		return fmt.Errorf("config migrate: want one soci-snapshotter config file, got %d arguments", len(pos))
	}
	if *hostsDir != "" {
		// registry.config_path must be absolute; so is what the daemon
		// is told.
		abs, err := filepath.Abs(*hostsDir)
		if err != nil {
			return fmt.Errorf("config migrate: --hosts-dir: %w", err)
		}
		*hostsDir = abs
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fmt.Errorf("config migrate: %w", err)
	}
	defer f.Close()
	m, err := config.MigrateSoci(f, *hostsDir)
	if err != nil {
		return fmt.Errorf("config migrate %s: %w", pos[0], err)
	}
	if err := writeMigrated(*out, m.TOML, stdout); err != nil {
		return err
	}
	written, err := writeHosts(*hostsDir, m.Hosts)
	reportMigration(stderr, m, *hostsDir, written)
	return err
}

// writeMigrated writes the configuration to path, or to stdout when path
// is empty. An existing file is left alone: it may be the node's current
// configuration.
func writeMigrated(path string, data []byte, stdout io.Writer) error {
	if path == "" {
		_, err := stdout.Write(data)
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("config migrate: write the configuration: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("config migrate: write %s: %w", path, err)
	}
	return f.Close()
}

// writeHosts writes dir/HOST/hosts.toml for each file, never over an
// existing one, and returns the paths written. With dir empty it writes
// nothing.
func writeHosts(dir string, files []config.HostsFile) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	var written []string
	var errs []error
	for _, h := range files {
		// The host comes from the file being migrated: it must name one
		// directory under dir, nothing else.
		if h.Host == "" || h.Host == "." || h.Host == ".." || strings.ContainsAny(h.Host, `/\`) {
			errs = append(errs, fmt.Errorf("hosts.toml for %q: not a registry host name", h.Host))
			continue
		}
		path := filepath.Join(dir, h.Host, "hosts.toml")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			errs = append(errs, fmt.Errorf("hosts.toml for %s: %w", h.Host, err))
			continue
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			errs = append(errs, fmt.Errorf("%s exists; merge the mirrors printed above by hand", path))
			continue
		}
		if err == nil {
			_, err = f.WriteString(h.Text)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", path, err))
			continue
		}
		written = append(written, path)
	}
	return written, errors.Join(errs...)
}

// reportMigration tells the operator what did not carry over and what to
// do with the mirrors.
func reportMigration(w io.Writer, m *config.Migration, hostsDir string, written []string) {
	if len(m.Skipped) > 0 {
		fmt.Fprintf(w, "Not carried over (%d keys):\n", len(m.Skipped))
		for _, s := range m.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Key, s.Reason)
		}
	}
	for _, n := range m.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	done := map[string]bool{}
	for _, p := range written {
		done[p] = true
		fmt.Fprintf(w, "Wrote %s\n", p)
	}
	for _, h := range m.Hosts {
		if hostsDir != "" && done[filepath.Join(hostsDir, h.Host, "hosts.toml")] {
			continue
		}
		fmt.Fprintf(w, "\nhosts.toml for %s (write it to <config_path>/%s/hosts.toml, e.g. /etc/containerd/certs.d/%s/hosts.toml):\n",
			h.Host, h.Host, h.Host)
		for _, line := range strings.SplitAfter(strings.TrimSuffix(h.Text, "\n"), "\n") {
			fmt.Fprintf(w, "    %s", line)
		}
		fmt.Fprintln(w)
	}
}
