package main

import (
	"context"
	"os"
	"testing"
	"time"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestLazyTokenAuth runs the daemon against a distribution registry with
// `auth: token` whose tokens live 2 s. A layer is prepared lazily and
// read; then, with every token expired, it is prepared again (discovery,
// the blob probe) and, with the tokens expired once more, read through
// its FUSE mount: each step renews its token without an error reaching
// the reader.
func TestLazyTokenAuth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	ctx := logtest.WithT(context.Background(), t)
	ts := regtest.StartTokenServer(t, "alice", "s3cret", 2*time.Second)
	reg := regtest.StartWithTokenAuth(t, ts)
	labels := indexedLayerLabels(ctx, t, reg)
	t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret"))

	cfg := config.Default()
	cfg.Daemon.Root = t.TempDir()
	cfg.BackgroundFetch.Enable = false
	svc, err := newService(ctx, cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.shutdown(ctx, true) })
	sn := svc.sn

	prepareAndRead := func(key string, pause time.Duration) {
		t.Helper()
		if _, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("unpack Prepare %q = %v, want AlreadyExists (layer served lazily)", key, err)
		}
		time.Sleep(pause)
		mounts, err := sn.View(ctx, "view", "layer")
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, mounts, "etc/hello", "hello from the registry")
		if err := sn.Remove(ctx, "view"); err != nil {
			t.Fatal(err)
		}
	}
	prepareAndRead("extract-1 layer", 0)
	first := len(ts.Issued())
	if err := sn.Remove(ctx, "layer"); err != nil {
		t.Fatalf("remove the lazy layer: %v", err)
	}
	time.Sleep(ts.TTL + 500*time.Millisecond)
	prepareAndRead("extract-2 layer", ts.TTL+500*time.Millisecond)
	if n := len(ts.Issued()); n < first+2 {
		t.Errorf("tokens: %d for the first mount, %d in all; want at least two renewals (mount, read)", first, n)
	}
}
