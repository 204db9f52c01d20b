package bench

import (
	"bytes"
	"image/png"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/snapshot"
)

// sampleResults are two runs per snapshotter on both links, with another
// snapshotter, as a benchmark would record them.
func sampleResults() Results {
	r := Results{Cfg: Config{Links: []string{LinkLoopback, LinkShaped}, Runs: 2, Scale: "small",
		Other: &Other{Name: "soci"}}, When: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC), Machine: "2 cores"}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, link := range r.Cfg.Links {
		k := 1.0
		if link == LinkShaped {
			k = 5
		}
		for run := range 2 {
			j := 1 + 0.1*float64(run)
			r.Measures = append(r.Measures,
				Measure{Link: link, Snapshotter: Overlay, FirstOutput: sec(6 * k * j), Fetched: 360e6, Read: sec(0.6 * j),
					Complete: sec(6 * k * j), Find: sec(0.15 * j), Small: sec(0.03 * j)},
				Measure{Link: link, Snapshotter: Ociseek, FirstOutput: sec(1.2 * k * j), Fetched: 12e6, Read: sec(1.1 * j), ReadFetched: 140e6,
					Complete: sec(40 * j), Incomplete: run == 1 && link == LinkShaped, Find: sec(0.3 * j), Small: sec(0.5 * j), PeakRSS: 100e6,
					Timeline: []Step{{StepResolve, sec(0.2)}, {StepZtocFetch, sec(0.5 * j)}, {StepFirstRead, sec(0.5)}}},
				Measure{Link: link, Snapshotter: "soci", FirstOutput: sec(1.6 * k * j), Fetched: 12e6, Read: sec(1.8 * j),
					Find: sec(1.7 * j), Small: sec(0.8 * j), PeakRSS: 95e6})
		}
	}
	return r
}

// TestLines: the summary lines have the issues' formats and the medians
// and ratios of the runs.
func TestLines(t *testing.T) {
	lines := sampleResults().Lines()
	want := []string{
		"bench: loopback lazy 1.26 s, full 6.30 s, ratio 0.20, fetched 12.0 MB, complete 42.0 s",
		"bench: loopback soci lazy 1.68 s, full 6.30 s, ratio 0.27, fetched 12.0 MB, complete n/a s",
		"bench: shaped lazy 6.30 s, full 31.5 s, ratio 0.20, fetched 12.0 MB, complete > 42.0 s",
		"bench: shaped soci lazy 8.40 s, full 31.5 s, ratio 0.27, fetched 12.0 MB, complete n/a s",
		"bench: runtime find 2.00× overlayfs, small 0.53 s, peak 100 MB",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	format := regexp.MustCompile(`^bench: \S+ lazy [0-9.]+ s, full [0-9.]+ s, ratio [0-9.]+, fetched [0-9.]+ MB, complete (> )?[0-9.]+ s$`)
	if !format.MatchString(lines[0]) {
		t.Errorf("%q does not match the issue's format", lines[0])
	}
}

// TestMarkdown: one table per link with median (min–max) cells, ratios to
// overlayfs, a dash where a snapshotter has no figure, and the timeline.
func TestMarkdown(t *testing.T) {
	md := sampleResults().Markdown()
	for _, want := range []string{
		"## Loopback",
		"## Shaped link: 100 Mbit/s, 20ms RTT",
		"| measure | overlayfs | ociseek | ociseek / overlayfs | soci | soci / overlayfs |",
		"| (a) pull + run to the first output | 6.30 s (6.00–6.60) | 1.26 s (1.20–1.32) | 0.20× | 1.68 s (1.60–1.76) | 0.27× |",
		"| (d) image complete on local disk | 31.5 s (30.0–33.0) | > 42.0 s (40.0–44.0) |",
		"| snapshotter peak RSS (VmHWM) | — | 100 MB | — | 95.0 MB | — |",
		"| zTOC fetch | 0.525 s | 0.725 s |",
		"![first output and completion per link](benchmarks-e2e.png)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestChart: the chart is a PNG of the chart's width, one panel per link.
func TestChart(t *testing.T) {
	b, err := sampleResults().Chart()
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	// 2 panels × 3 metrics × 3 snapshotters, less the other's completion.
	bars := 2 * 8
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != chartWidth || h < bars*(barHeight+barGap) {
		t.Errorf("chart %d×%d, want %d wide and room for %d bars", w, h, chartWidth, bars)
	}
}

// TestBuildTimeline: the steps follow the marks in time order and add up
// to the time to the first output; a missing or out-of-order mark folds
// its step into the next.
func TestBuildTimeline(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	base := snapshot.Timings{Start: t0.Add(ms(300)), Mount: ms(50), Unpack: ms(100), Total: ms(160)}
	data := snapshot.Timings{Start: t0.Add(ms(500)), Mount: ms(400), Total: ms(420)}
	first := t0.Add(ms(1500))
	steps := buildTimeline(t0, first, base, data, t0.Add(ms(700)), t0.Add(ms(1300)), t0.Add(ms(1400)))
	want := []Step{
		{StepResolve, ms(300)}, {StepDiscovery, ms(50)}, {StepUnpack, ms(110)}, {StepBetween, ms(40)},
		{StepZtocFetch, ms(200)}, {StepMount, ms(200)}, {StepCommit, ms(20)}, {StepContainer, ms(380)},
		{StepHelloSpan, ms(100)}, {StepFirstRead, ms(100)},
	}
	if len(steps) != len(want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Errorf("step %d = %v, want %v", i, steps[i], want[i])
		}
	}
	// No zTOC GET seen and the span GET before the commit: their time
	// goes to the next step.
	steps = buildTimeline(t0, first, base, data, time.Time{}, t0.Add(ms(800)), t0.Add(ms(850)))
	var sum time.Duration
	for _, s := range steps {
		sum += s.Took
		if s.Name == StepZtocFetch || s.Name == StepContainer || s.Name == StepHelloSpan {
			t.Errorf("step %q without its mark", s.Name)
		}
	}
	if sum != first.Sub(t0) {
		t.Errorf("steps add up to %v, want %v: %v", sum, first.Sub(t0), steps)
	}
}

// TestConfigFromEnv: defaults, the options, and refusals of bad values.
func TestConfigFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := ConfigFromEnv(env(nil), "/docs")
	if err != nil || len(c.Links) != 2 || c.Runs != 3 || c.Scale != "full" || c.Out != "/docs" || c.Other != nil {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	c, err = ConfigFromEnv(env(map[string]string{EnvLinks: "shaped", EnvRuns: "1", EnvScale: "small",
		EnvOtherBin: "/bin/snap", EnvOtherName: "soci"}), "/docs")
	if err != nil || len(c.Links) != 1 || c.Links[0] != LinkShaped || c.Runs != 1 || c.Other == nil ||
		c.Other.Name != "soci" || strings.Join(c.Other.Args, " ") != "--address {address} --root {root}" {
		t.Errorf("options: %+v (other %+v), %v", c, c.Other, err)
	}
	if got := c.Snapshotters(); strings.Join(got, ",") != "overlayfs,ociseek,soci" {
		t.Errorf("snapshotters %v", got)
	}
	for _, bad := range []map[string]string{
		{EnvLinks: "wifi"}, {EnvRuns: "0"}, {EnvScale: "huge"}, {EnvCompleteTimeout: "soon"},
		{EnvOtherAddr: "/run/x.sock", EnvOtherName: "ociseek"},
	} {
		if _, err := ConfigFromEnv(env(bad), "/docs"); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
