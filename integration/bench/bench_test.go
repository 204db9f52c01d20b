package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// Settings of the benchmark's setup that are not in Config.
const (
	// envBin names a directory with prebuilt ociseek binaries (the
	// Makefile passes bin/); unset, the test builds them.
	envBin = "OCISEEK_BENCH_BIN"
	// envRegistry is distribution (default; v1 index via the fallback
	// tag) or olareg (v1 index via the referrers API).
	envRegistry = "OCISEEK_BENCH_REGISTRY"
	// envReportOnly ("1") remakes the report from the raw results in the
	// output directory without measuring.
	envReportOnly = "OCISEEK_BENCH_REPORT_ONLY"
)

// TestBenchE2E is `make bench-e2e`; see the package comment. It fails
// rather than skips once enabled, so a broken benchmark shows.
func TestBenchE2E(t *testing.T) {
	if os.Getenv(EnvEnable) != "1" {
		t.Skipf("the end-to-end benchmark runs with %s=1 (make bench-e2e)", EnvEnable)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the benchmark starts containerd and FUSE mounts and drops caches: run it as root")
	}
	start := time.Now()
	mod, err := harness.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigFromEnv(os.Getenv, filepath.Join(mod, "docs"))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(envReportOnly) == "1" {
		res, err := ReadResults(cfg.Out)
		if err != nil {
			t.Fatal(err)
		}
		res.Cfg.Out = cfg.Out
		writeReport(t, res)
		return
	}
	ctx := context.Background()
	r := &Runner{Cfg: cfg, Img: ImageFor(cfg.Scale), Logf: t.Logf}
	if r.Tools, err = harness.FindTools(); err != nil {
		t.Fatal(err)
	}
	if bin := os.Getenv(envBin); bin != "" {
		r.Tools.Ociseek, r.Tools.Snapshotter = filepath.Join(bin, "ociseek"), filepath.Join(bin, "ociseek-snapshotter")
	} else if err := harness.BuildProject(ctx, mod, t.TempDir(), &r.Tools); err != nil {
		t.Fatal(err)
	}
	r.Nerdctl = harness.Tool(t, "nerdctl")
	img := benchImage(t, r)
	kind := regtest.KindDistribution
	if os.Getenv(envRegistry) == string(regtest.KindOlareg) {
		kind = regtest.KindOlareg
	}
	reg := regtest.Start(t, kind)
	pushIndexed(t, ctx, r, reg.Host, img)
	var targets []Target
	for _, link := range cfg.Links {
		upstream := reg.Host
		if link == LinkShaped {
			sh, err := harness.StartShaperIn(harness.ScopeOf(t), reg.Host, harness.Link100Mbit20ms)
			if err != nil {
				t.Fatal(err)
			}
			upstream = sh.Host
		}
		p := harness.StartCountingProxy(t, upstream)
		targets = append(targets, Target{Link: link, Proxy: p, Ref: p.Host + "/bench:v1"})
	}

	res := Results{Cfg: cfg, When: start, Registry: string(kind), Machine: machine()}
	for _, l := range img.Layers {
		res.ImageBytes += int64(len(l.Blob))
	}
	for _, tg := range targets {
		for run := range cfg.Runs {
			order := cfg.Snapshotters()
			if run%2 == 1 { // alternate which goes first
				order = reverse(order)
			}
			for _, sn := range order {
				m, err := r.RunOnce(ctx, tg, sn)
				if err != nil {
					t.Fatalf("%s run %d, %s: %v", tg.Link, run+1, sn, err)
				}
				t.Logf("%s run %d %s: first output %.3f s (%d bytes), read %.3f s, complete %.1f s (incomplete %t), find %.3f s (%d entries), small %.3f s, peak %.1f MB; %d of 3 workloads timed from outside",
					tg.Link, run+1, sn, m.FirstOutput.Seconds(), m.Fetched, m.Read.Seconds(), m.Complete.Seconds(), m.Incomplete,
					m.Find.Seconds(), m.FindEntries, m.Small.Seconds(), float64(m.PeakRSS)/1e6, m.OutsideClock)
				res.Measures = append(res.Measures, m)
				// The report so far, so that a benchmark cut short still
				// leaves its figures.
				res.Took = time.Since(start)
				if err := res.Write(cfg.Out); err != nil {
					t.Logf("partial report: %v", err)
				}
			}
		}
	}
	res.Took = time.Since(start)
	res.Machine += fmt.Sprintf("; load at the end %s", loadavg())
	writeReport(t, res)
}

// writeReport writes res into its output directory and prints its lines
// and ociseek's timelines.
func writeReport(t *testing.T, res Results) {
	if err := res.Write(res.Cfg.Out); err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Lines() {
		fmt.Println(l)
	}
	for _, link := range res.Cfg.Links {
		if tl := res.timeline(link, Ociseek); tl != nil {
			fmt.Printf("bench: %s timeline of ociseek's start (medians):\n%s", link, formatTimeline(tl))
		}
	}
	t.Logf("report: %s", filepath.Join(res.Cfg.Out, ReportFile))
}

// benchImage builds (or reads from the cache) the image of r's scale and
// records its layers in r.
func benchImage(t *testing.T, r *Runner) harness.Image {
	t.Helper()
	base, err := harness.BusyboxLayer(r.Tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	data, err := harness.DataLayer(r.Img.Data, filepath.Join(os.TempDir(), "ociseek-integration-cache"))
	if err != nil {
		t.Fatal(err)
	}
	chain := identity.ChainIDs([]digest.Digest{base.DiffID, data.DiffID})
	r.Layers = Layers{Base: base.Digest(), Data: data.Digest(), BaseChain: chain[0], DataChain: chain[1],
		DataSize: int64(len(data.Blob))}
	return harness.Image{Layers: []harness.Layer{base, data}, Cmd: []string{"/bin/cat", "/" + harness.HelloPath}}
}

// pushIndexed pushes img as bench:v1 and gives it a SOCI index (v1, 4 MiB
// spans; the base layer is below the minimum size and has no zTOC).
func pushIndexed(t *testing.T, ctx context.Context, r *Runner, host string, img harness.Image) {
	t.Helper()
	if _, err := harness.PushImage(ctx, host, "bench", "v1", img); err != nil {
		t.Fatal(err)
	}
	out, err := harness.Run(ctx, 20*time.Minute, r.Tools.Ociseek, "create",
		"--min-layer-size", "2000000", "--span-size", "4194304", host+"/bench:v1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek create:\n%s", out)
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// machine describes the machine: cores and load average.
func machine() string {
	return fmt.Sprintf("%d cores, load average at the start %s", runtime.NumCPU(), loadavg())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
