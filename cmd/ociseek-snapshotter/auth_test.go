package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
)

// TestLazyAuth does a lazy unpack Prepare (see TestLazyOutcome) of an
// image in a registry that demands a user and password. The daemon's one
// auth client, shared by discovery, fs/remote and local unpack, finds the
// credentials in the docker config file: named by $DOCKER_CONFIG, by the
// registry.docker_config key, or written after the daemon started (docker
// login while it runs). Without valid credentials the layer is left to
// containerd, after a bounded number of requests.
func TestLazyAuth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.StartWithAuth(t, "alice", "s3cret")
	labels := indexedLayerLabels(ctx, t, reg)

	// start returns a daemon whose credentials come from dockerConfig
	// (the config key) or, when that is empty, $DOCKER_CONFIG.
	start := func(t *testing.T, dockerConfig string) *snapshot.Snapshotter {
		cfg := config.Default()
		cfg.Daemon.Root = t.TempDir()
		cfg.Registry.DockerConfig = dockerConfig
		cfg.BackgroundFetch.Enable = false
		svc, err := newService(ctx, cfg, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.shutdown(ctx, true) })
		return svc.sn
	}
	wantLazy := func(t *testing.T, sn *snapshot.Snapshotter, key string) {
		if _, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("unpack Prepare = %v, want AlreadyExists (layer served lazily)", err)
		}
		mounts, err := sn.View(ctx, "view", "layer")
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, mounts, "etc/hello", "hello from the registry")
	}
	// wantLeftToContainerd checks the Prepare returns overlay mounts for
	// containerd to fill, and that the daemon gave up quickly.
	wantLeftToContainerd := func(t *testing.T, sn *snapshot.Snapshotter) {
		before := len(reg.Requests(t))
		if _, err := sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels)); err != nil {
			t.Fatalf("unpack Prepare without credentials = %v, want overlay mounts for containerd", err)
		}
		info, err := sn.Stat(ctx, "extract-1 layer")
		if err != nil || info.Labels[snapshot.LabelDecision] != string(snapshot.OutcomeOverlay) {
			t.Errorf("decision labels %v (%v), want the overlay outcome", info.Labels, err)
		}
		reqs := reg.Requests(t)[before:]
		var refused int
		for _, r := range reqs {
			if r.Status == http.StatusUnauthorized {
				refused++
			}
		}
		t.Logf("%d requests, %d refused, before the layer was left to containerd", len(reqs), refused)
		// Discovery and local unpack each try once: a challenge and at
		// most one attempt with credentials, a few lookups each.
		if len(reqs) > 6 {
			t.Errorf("%d requests (%d refused) before giving up, want ≤ 6 (no retries of a refusal): %+v", len(reqs), refused, reqs)
		}
	}

	t.Run("DOCKER_CONFIG", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret"))
		wantLazy(t, start(t, ""), "extract-1 layer")
	})
	t.Run("docker_config key", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		dir := reg.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret")
		wantLazy(t, start(t, filepath.Join(dir, "config.json")), "extract-1 layer")
	})
	t.Run("login after start", func(t *testing.T) {
		// The first unpack fails for want of credentials; after a login
		// the next one is lazy: neither the credential store nor
		// discovery's cache remembered the failure.
		dir := t.TempDir()
		t.Setenv("DOCKER_CONFIG", dir)
		sn := start(t, "")
		wantLeftToContainerd(t, sn)
		if err := sn.Remove(ctx, "extract-1 layer"); err != nil {
			t.Fatal(err)
		}
		reg.WriteDockerConfig(t, dir, "alice", "s3cret")
		wantLazy(t, sn, "extract-2 layer")
	})
	t.Run("no credentials", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		wantLeftToContainerd(t, start(t, ""))
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("DOCKER_CONFIG", reg.WriteDockerConfig(t, t.TempDir(), "alice", "wrong"))
		wantLeftToContainerd(t, start(t, ""))
	})
}
