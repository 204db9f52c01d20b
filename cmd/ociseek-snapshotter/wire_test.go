package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/index/build"
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
	img := reg.PushImage(t, "app", [][]byte{blob}, nil)
	if _, err := build.Create(ctx, reg.Repository(t, "app"), "latest", nil,
		build.CreateOptions{Options: build.Options{SpanSize: 1 << 16}}); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Daemon.Root = t.TempDir()
	cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	cfg.BackgroundFetch.Enable = false
	sn, err := newSnapshotter(ctx, cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	defer sn.UnmountAll(ctx)

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
}
