package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
)

// TestDiscoveryPolicyWiring: the [discovery] trust list and zTOC bounds
// reach the daemon's discovery. The image carries only a v1 index: with
// v1 indices trusted from another registry only, containerd gets the layer
// (overlay, v1-index-not-trusted); with a 1-byte zTOC bound, the daemon
// unpacks it itself (local-unpack, ztoc-too-large).
func TestDiscoveryPolicyWiring(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay mounts and local unpack")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.Start(t, regtest.KindDistribution)
	blob, _ := testLayer(t)
	img := pushIndexedImage(ctx, t, reg, blob)

	for _, tc := range []struct {
		name string
		set  func(*config.Discovery)
		want snapshot.Decision
	}{
		{"untrusted v1", func(d *config.Discovery) { d.V1Trusted = []string{"registry.example/team"} },
			snapshot.Decision{Outcome: snapshot.OutcomeOverlay, Reason: snapshot.ReasonV1NotTrusted}},
		{"trusted v1", func(d *config.Discovery) { d.V1Trusted = []string{reg.Host + "/app"} },
			snapshot.Decision{Outcome: snapshot.OutcomeLazy, Reason: snapshot.ReasonMountedUnverified}},
		{"zTOC over the size bound", func(d *config.Discovery) { d.MaxZtocBytes = 1 },
			snapshot.Decision{Outcome: snapshot.OutcomeLocalUnpack, Reason: snapshot.ReasonZtocTooLarge}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Daemon.Root = t.TempDir()
			cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
			cfg.BackgroundFetch.Enable = false
			tc.set(&cfg.Discovery)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			svc, err := newService(ctx, cfg, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			defer svc.shutdown(ctx, true)
			labels := map[string]string{
				snapshots.LabelSnapshotRef: "layer",
				fs.LabelImageRef:           reg.Ref("app", "latest"),
				fs.LabelManifestDigest:     img.Digest.String(),
				fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
			}
			_, _ = svc.sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels))
			// Lazy and local unpacks are committed as "layer"; an overlay
			// one waits, active, for containerd to apply and commit it.
			key := "layer"
			if tc.want.Outcome == snapshot.OutcomeOverlay {
				key = "extract-1 layer"
			}
			info, err := svc.sn.Stat(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got := snapshot.Decision{
				Outcome: snapshot.Outcome(info.Labels[snapshot.LabelDecision]),
				Reason:  snapshot.Reason(info.Labels[snapshot.LabelDecisionReason]),
			}
			if got != tc.want {
				t.Fatalf("decision = %v, want %v", got, tc.want)
			}
		})
	}
}
