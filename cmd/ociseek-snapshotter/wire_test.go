package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
)

// TestLazyOutcome drives the daemon's wiring end to end: an image indexed
// with a v1 SOCI index in a real registry, an unpack Prepare with the
// labels containerd's CRI plugin sends, and the layer is mounted lazily
// (discovery through the fallback tag, blob through fs/remote, FUSE), so
// containerd is told it already exists and a view of it reads the file.
func TestLazyOutcome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.Start(t, regtest.KindDistribution)
	blob, _ := testLayer(t)
	img := pushIndexedImage(ctx, t, reg, blob)

	cfg := config.Default()
	cfg.Daemon.Root = t.TempDir()
	cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	cfg.BackgroundFetch.Enable = false
	cfg.Metrics = config.Metrics{Network: "unix", Address: filepath.Join(t.TempDir(), "metrics.sock")}
	promReg := prometheus.NewRegistry()
	svc, err := newService(ctx, cfg, promReg)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.shutdown(ctx, true)
	sn := svc.sn

	labels := map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           reg.Ref("app", "latest"),
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
	}
	if _, err := sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("unpack Prepare = %v, want AlreadyExists (layer served lazily)", err)
	}
	info, err := sn.Stat(ctx, "layer")
	if err != nil || info.Labels[snapshot.LabelDecision] != string(snapshot.OutcomeLazy) {
		t.Fatalf("Stat(layer) = %+v, %v; want the lazy decision", info.Labels, err)
	}
	mounts, err := sn.View(ctx, "view", "layer")
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, mounts, "etc/hello", "hello from the registry")

	metrics := scrapeMetrics(t, cfg.Metrics, promReg)
	for _, series := range []string{
		`ociseek_snapshot_layer_decisions_total{outcome="lazy",reason="mounted-unverified"} 1`,
		`ociseek_span_fetched_bytes_total{reason="demand"}`,
		`ociseek_span_fetches_total{reason="demand"}`,
		`ociseek_span_read_seconds_bucket{le=`,
		`ociseek_span_read_seconds_count`,
		`ociseek_fs_layers_mounted 1`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	// Labels come from fixed sets: no digest, mountpoint or image name may
	// appear, or every pulled layer would add series for ever.
	for _, leak := range []string{"sha256:", cfg.Daemon.Root, reg.Ref("app", "latest")} {
		if strings.Contains(metrics, leak) {
			t.Errorf("/metrics carries per-layer label values (%q)", leak)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", metrics)
	}
}

// scrapeMetrics serves reg the way the daemon does (serveMetrics) and
// returns what GET /metrics answers, minus the Go runtime's own series.
func scrapeMetrics(t *testing.T, cfg config.Metrics, reg *prometheus.Registry) string {
	t.Helper()
	errc := make(chan error, 1)
	srv, err := serveMetrics(cfg, reg, errc)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.Address)
	}}}
	resp, err := hc.Get("http://ociseek/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	return string(body)
}
