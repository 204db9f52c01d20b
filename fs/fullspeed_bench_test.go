package fs

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/internal/regtest"
)

// BenchmarkCompletion measures how long after the start of its mount a
// layer is complete (every byte fetched and verified by the continuous
// pass, every span cached), with the full-speed policy and with the idle
// policy, against what a full pull costs in the same iteration: the blob
// downloaded in one request and gunzipped (io.Copy to nowhere; an unpack
// to disk would add to it). The idle policy runs with a quiet period of
// 1 ms, so its figure is the pass alone; the daemon's default adds 30 s of
// silence before it.
//
// It also times cold reads of 4 MiB files near the layer's end, one after
// another right after the mount (cat, another process), while the
// full-speed completion runs, against the same reads with the idle policy
// and its default quiet period (no background transfer at all): the
// foreground must keep its latency.
//
// Links: loopback, and 100 Mbit/s with 20 ms round trips through a shaping
// proxy (shaper_test.go). The layer is about 96 MB of gzip
// ($OCISEEK_BENCH_COMPLETE_MB to change it), 4 MiB spans. Target: full
// speed ≤ 1.1× the full pull on the shaped link.
func BenchmarkCompletion(b *testing.B) {
	mb := envInt("OCISEEK_BENCH_COMPLETE_MB", 96)
	reg := regtest.Start(b, regtest.KindDistribution)
	img := pushEntries(b, reg, "bench/complete", bigFileEntries(mb*2<<20/(4<<20), 4<<20), 4<<20)
	img.entries = nil
	for _, link := range []struct {
		name string
		bps  float64
		rtt  time.Duration
	}{{"loopback", 0, 0}, {"shaped", 100e6, 20 * time.Millisecond}} {
		b.Run("link="+link.name, func(b *testing.B) {
			at := img
			if link.bps > 0 {
				shaped := *img
				l := startShapedLink(b, reg.Host, link.bps, link.rtt)
				shaped.ref.ImageRef = strings.Replace(img.ref.ImageRef, reg.Host, l.Host, 1)
				at = &shaped
			}
			benchCompletion(b, at)
		})
	}
}

// completionRun is what one FS of the benchmark measured.
type completionRun struct {
	complete time.Duration   // mount start to complete
	fetched  int64           // compressed bytes fetched meanwhile
	reads    []time.Duration // cold reads right after the mount
}

func benchCompletion(b *testing.B, img *image) {
	fullSpeed := bgfetch.Options{Policy: bgfetch.PolicyFullSpeed}
	idleNow := bgfetch.Options{Policy: bgfetch.PolicyIdle, QuietPeriod: time.Millisecond}
	idleDefault := bgfetch.Options{Policy: bgfetch.PolicyIdle, QuietPeriod: 30 * time.Second}
	var full, fast, idle time.Duration
	var fetched int64
	var fgFast, fgIdle []time.Duration
	for b.Loop() {
		full += timeFullPull(b, img)
		r := runCompletion(b, img, fullSpeed, 0)
		fast += r.complete
		fetched += r.fetched
		idle += runCompletion(b, img, idleNow, 0).complete
		fgFast = append(fgFast, runCompletion(b, img, fullSpeed, 5).reads...)
		fgIdle = append(fgIdle, runCompletion(b, img, idleDefault, 5).reads...)
	}
	n := float64(b.N)
	b.ReportMetric(full.Seconds()/n, "s-full-pull")
	b.ReportMetric(fast.Seconds()/n, "s-fullspeed")
	b.ReportMetric(idle.Seconds()/n, "s-idle-pass")
	b.ReportMetric(fast.Seconds()/full.Seconds(), "fullspeed/full")
	b.ReportMetric(idle.Seconds()/full.Seconds(), "idle/full")
	b.ReportMetric(float64(fetched)/n/float64(len(img.layer)), "fetched/blob")
	b.ReportMetric(ms(percentile(fgFast, 50)), "fg-p50-ms-fullspeed")
	b.ReportMetric(ms(percentile(fgFast, 100)), "fg-max-ms-fullspeed")
	b.ReportMetric(ms(percentile(fgIdle, 50)), "fg-p50-ms-idle")
	b.ReportMetric(ms(percentile(fgIdle, 100)), "fg-max-ms-idle")
	b.ReportMetric(float64(len(img.layer))/1e6, "layer-MB")
}

// timeFullPull downloads img's layer blob in one request and gunzips it.
func timeFullPull(b *testing.B, img *image) time.Duration {
	b.Helper()
	host := strings.SplitN(img.ref.ImageRef, "/", 2)[0]
	repo := strings.SplitN(strings.SplitN(img.ref.ImageRef, "/", 2)[1], ":", 2)[0]
	url := fmt.Sprintf("http://%s/v2/%s/blobs/%s", host, repo, img.ref.LayerDigest)
	client := &http.Client{Transport: remote.NewTransport()}
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil || n != img.ztoc.UncompressedArchiveSize {
		b.Fatalf("gunzip: %d bytes, %v", n, err)
	}
	return time.Since(start)
}

// runCompletion mounts img on a fresh FS with bo and, after reads cold
// reads of files near the layer's end, waits for the layer to complete
// (when reads is 0; else it stops there).
func runCompletion(b *testing.B, img *image, bo bgfetch.Options, reads int) completionRun {
	b.Helper()
	blobs := remoteBlobs()
	blobs.Client = &http.Client{Transport: remote.NewTransport()}
	reg := prometheus.NewRegistry()
	f, err := New(b.TempDir(), newSource(img), blobs, WithBackgroundFetch(bo), WithRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	defer closeFS(b, f)
	var r completionRun
	start := time.Now()
	mp := mountImage(b, f, img)
	files := img.ztoc.TOC
	for i := range reads {
		name := files[len(files)-1-2*i].Name
		t0 := time.Now()
		catToNull(b, filepath.Join(mp, name))
		r.reads = append(r.reads, time.Since(t0))
	}
	if reads > 0 {
		return r
	}
	awaitComplete(b, f, mp, start, 5*time.Millisecond)
	r.complete = time.Since(start)
	r.fetched = fetchedBytes(b, reg)
	return r
}

// awaitComplete polls the status of the layer at mp every poll until it
// is complete, for at most 10 minutes after start.
func awaitComplete(b *testing.B, f *FS, mp string, start time.Time, poll time.Duration) {
	b.Helper()
	for {
		st, err := f.Status(mp)
		if err != nil || st.Failed != nil {
			b.Fatalf("status: %+v, %v", st, err)
		}
		if st.Complete {
			return
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("not complete 10 minutes after the mount")
		}
		time.Sleep(poll)
	}
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := max((p*len(s)+99)/100-1, 0)
	return s[min(i, len(s)-1)]
}

// envInt returns the positive integer in environment variable name, or
// def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
