// Package bench is the end-to-end benchmark of `make bench-e2e` (issues 14
// and 15): an image of the issues' shape is started by nerdctl on
// containerd with overlayfs (a full pull) and with ociseek (and any other
// snapshotter given by environment), alternating, with fresh state and
// dropped caches each run, on loopback and on an emulated 100 Mbit/s,
// 20 ms link. It measures the first output, the registry bytes until then,
// a 128 MiB read, the time until the image is complete on disk, a metadata
// walk, 2,000 small files and the snapshotter's peak memory, and writes a
// markdown report and a PNG chart.
//
// TestBenchE2E runs it only when OCISEEK_BENCH_E2E=1 (see the Makefile);
// `make test` runs only the unit tests of the report and the chart.
package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
)

// Environment variables of the benchmark.
const (
	// EnvEnable turns the benchmark on ("1").
	EnvEnable = "OCISEEK_BENCH_E2E"
	// EnvLinks is loopback, shaped or all (default all).
	EnvLinks = "OCISEEK_BENCH_LINKS"
	// EnvRuns is the number of runs per link and snapshotter (default 3).
	EnvRuns = "OCISEEK_BENCH_RUNS"
	// EnvScale is full (default: the 360 MB image) or small (a
	// 45 MB image of the same shape, for trying the benchmark out).
	EnvScale = "OCISEEK_BENCH_SCALE"
	// EnvOut is the directory the report and chart go to (default: docs
	// of the module).
	EnvOut = "OCISEEK_BENCH_OUT"
	// EnvCompleteTimeout bounds the wait for a lazy image to be complete
	// on disk (default 5m); a run that takes longer reports "> timeout".
	EnvCompleteTimeout = "OCISEEK_BENCH_COMPLETE_TIMEOUT"
	// EnvOtherBin is another snapshotter's binary, started for each run
	// like ociseek's with EnvOtherArgs.
	EnvOtherBin = "OCISEEK_BENCH_OTHER_BIN"
	// EnvOtherArgs are its arguments, split on spaces, with {address},
	// {root} and {dir} replaced by the socket, state directory and a
	// private directory of the run (default "--address {address} --root
	// {root}", the SOCI snapshotter's flags).
	EnvOtherArgs = "OCISEEK_BENCH_OTHER_ARGS"
	// EnvOtherAddr is the socket of another snapshotter already running
	// (its state is then not fresh for each run); EnvOtherRoot is its
	// root, exported to containerd.
	EnvOtherAddr = "OCISEEK_BENCH_OTHER_ADDR"
	EnvOtherRoot = "OCISEEK_BENCH_OTHER_ROOT"
	// EnvOtherName names the other snapshotter in the report (default
	// "other").
	EnvOtherName = "OCISEEK_BENCH_OTHER_NAME"
)

// Link names.
const (
	LinkLoopback = "loopback"
	LinkShaped   = "shaped"
)

// Snapshotter names of the report; the other one is named by EnvOtherName.
const (
	Overlay = "overlayfs"
	Ociseek = "ociseek"
)

// Other is a snapshotter measured beside ociseek, given by environment.
type Other struct {
	// Name names it in the report.
	Name string
	// Bin and Args start it for each run (Args with the placeholders of
	// EnvOtherArgs); empty Bin: Addr is already running.
	Bin  string
	Args []string
	// Addr and Root are the socket and state directory of a running one.
	Addr, Root string
}

// Config is the benchmark's settings.
type Config struct {
	// Links are the links measured, in order.
	Links []string
	// Runs is the number of runs per link and snapshotter.
	Runs int
	// Scale is "full" or "small".
	Scale string
	// Out is the directory of the report and the chart.
	Out string
	// CompleteTimeout bounds the wait for a lazy image to be complete.
	CompleteTimeout time.Duration
	// Other is another snapshotter to measure, or nil.
	Other *Other
}

// ConfigFromEnv reads the benchmark's settings; docs is the default
// output directory.
func ConfigFromEnv(getenv func(string) string, docs string) (Config, error) {
	c := Config{Runs: 3, Scale: "full", Out: docs, CompleteTimeout: 5 * time.Minute}
	switch l := getenv(EnvLinks); l {
	case "", "all":
		c.Links = []string{LinkLoopback, LinkShaped}
	case LinkLoopback, LinkShaped:
		c.Links = []string{l}
	default:
		return c, fmt.Errorf("%s=%q: want loopback, shaped or all", EnvLinks, l)
	}
	if v := getenv(EnvRuns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("%s=%q: want a positive number", EnvRuns, v)
		}
		c.Runs = n
	}
	switch s := getenv(EnvScale); s {
	case "", "full":
	case "small":
		c.Scale = s
	default:
		return c, fmt.Errorf("%s=%q: want full or small", EnvScale, s)
	}
	if v := getenv(EnvOut); v != "" {
		c.Out = v
	}
	if v := getenv(EnvCompleteTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("%s=%q: want a duration such as 5m", EnvCompleteTimeout, v)
		}
		c.CompleteTimeout = d
	}
	bin, addr := getenv(EnvOtherBin), getenv(EnvOtherAddr)
	if bin != "" || addr != "" {
		o := &Other{Name: getenv(EnvOtherName), Bin: bin, Addr: addr, Root: getenv(EnvOtherRoot)}
		if o.Name == "" {
			o.Name = "other"
		}
		if o.Name == Overlay || o.Name == Ociseek {
			return c, fmt.Errorf("%s=%q: the name is taken", EnvOtherName, o.Name)
		}
		args := getenv(EnvOtherArgs)
		if args == "" {
			args = "--address {address} --root {root}"
		}
		o.Args = strings.Fields(args)
		c.Other = o
	}
	return c, nil
}

// Snapshotters returns the snapshotters measured, overlayfs first.
func (c Config) Snapshotters() []string {
	s := []string{Overlay, Ociseek}
	if c.Other != nil {
		s = append(s, c.Other.Name)
	}
	return s
}

// Image describes the benchmark image of a scale: the data layer's shape
// and the files the workloads read.
type Image struct {
	// Data is the data layer (above a ~1 MB busybox layer).
	Data harness.DataParams
	// ReadFiles are the two random files the 128 MiB workload hashes.
	ReadFiles []string
	// ReadBytes is their total size.
	ReadBytes int64
	// SmallFiles is the number of files under /data/small/d00[0-9].
	SmallFiles int
}

// ImageFor returns the image of a scale. Full is the issue's: 4 × 64 MiB
// random files, 20 text files of 3.5 MB, 20,000 random files of 0.5-8 KiB
// in 100 directories and /data/hello.txt, about 360 MB compressed. Small
// has the same shape at an eighth (8 MiB random files, 2,000 small files).
func ImageFor(scale string) Image {
	if scale == "small" {
		return Image{
			Data: harness.DataParams{Seed: 15, RandomBytes: 4 * 8 << 20, RandomFileBytes: 8 << 20,
				TextBytes: 2 * 3_500_000, TextFileBytes: 3_500_000,
				SmallFiles: 2000, SmallPerDir: 20, SmallMin: 512, SmallMax: 8192, SmallRandom: true},
			ReadFiles:  []string{"/data/random/blob-000", "/data/random/blob-001"},
			ReadBytes:  2 * 8 << 20,
			SmallFiles: 200,
		}
	}
	return Image{
		Data: harness.DataParams{Seed: 14, RandomBytes: 4 * 64 << 20, RandomFileBytes: 64 << 20,
			TextBytes: 20 * 3_500_000, TextFileBytes: 3_500_000,
			SmallFiles: 20000, SmallPerDir: 200, SmallMin: 512, SmallMax: 8192, SmallRandom: true},
		ReadFiles:  []string{"/data/random/blob-000", "/data/random/blob-001"},
		ReadBytes:  2 * 64 << 20,
		SmallFiles: 2000,
	}
}
