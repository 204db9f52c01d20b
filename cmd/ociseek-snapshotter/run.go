package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/containerd/log"
	"github.com/ociseek/ociseek/config"
)

// usageText heads --help; the flags follow it.
const usageText = `Usage: ociseek-snapshotter [flags]
       ociseek-snapshotter config default   print every option with its default
       ociseek-snapshotter config dump      print the configuration in effect
       ociseek-snapshotter config migrate SOCI_CONFIG
                                            convert a soci-snapshotter config.toml

containerd's remote snapshotter for SOCI-indexed images: indexed layers are
served lazily over FUSE, the others unpacked by the daemon or by containerd.

Signals:
  SIGTERM  stop serving and exit, leaving lazy layers mounted: the next start
           takes them over (systemd's default stop; use it for restarts and
           upgrades). Background fetching ends with the process.
  SIGINT   unmount every lazy layer, stop background fetching, then exit (a
           clean shutdown of the node: systemctl kill -s INT).

Under systemd the socket may be handed over (socket activation) and, with
Type=notify, readiness is reported once the socket serves.

Flags:
`

// flags are the command-line settings; those given override the file.
type flags struct {
	configPath string
	root       string
	address    string
	logLevel   string
	set        map[string]bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, []string, error) {
	f := &flags{set: map[string]bool{}}
	fset := flag.NewFlagSet("ociseek-snapshotter", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.StringVar(&f.configPath, "config", config.DefaultPath, "configuration file")
	fset.StringVar(&f.root, "root", "", "state directory (overrides daemon.root)")
	fset.StringVar(&f.address, "address", "", "unix socket for containerd (overrides daemon.address)")
	fset.StringVar(&f.logLevel, "log-level", "", "trace, debug, info, warn or error (overrides daemon.log_level)")
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), usageText)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return nil, nil, err
	}
	fset.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	return f, fset.Args(), nil
}

// run is the whole program: main only reports its error.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	f, rest, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(rest) == 2 && rest[0] == "config" && rest[1] == "default" {
		return config.Default().Encode(stdout)
	}
	if len(rest) == 2 && rest[0] == "fd-holder" {
		return holderVerb(ctx, rest[1]) // started by the daemon (keeper.go)
	}
	if len(rest) >= 2 && rest[0] == "config" && rest[1] == "migrate" {
		return runMigrate(rest[2:], stdout, os.Stderr)
	}
	cfg, err := loadConfig(f)
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 2 && rest[0] == "config" && rest[1] == "dump":
		return cfg.Encode(stdout)
	case len(rest) != 0:
		return fmt.Errorf("unknown command %q (commands: config default, config dump, config migrate)", rest)
	}
	if err := setupLogging(cfg.Daemon.LogLevel); err != nil {
		return err
	}
	return serve(ctx, cfg)
}

// loadConfig reads the configuration file and applies the flags. A missing
// file is fine at the default path (defaults apply) but an error when
// --config names it.
func loadConfig(f *flags) (*config.Config, error) {
	cfg, err := config.Load(f.configPath)
	if errors.Is(err, fs.ErrNotExist) && !f.set["config"] {
		cfg, err = config.Default(), nil
	}
	if err != nil {
		return nil, err
	}
	if f.set["root"] {
		cfg.Daemon.Root = f.root
	}
	if f.set["address"] {
		cfg.Daemon.Address = f.address
	}
	if f.set["log-level"] {
		cfg.Daemon.LogLevel = f.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	return cfg, nil
}

// setupLogging makes containerd/log emit JSON lines on stderr, so that
// journald and log shippers get fields, not prose.
func setupLogging(level string) error {
	if err := log.SetFormat(log.JSONFormat); err != nil {
		return err
	}
	if err := log.SetLevel(level); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	return nil
}
