package main

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestDaemonSignals: SIGTERM leaves a lazy layer in the mount table for
// the next start, which takes it over and serves it again; SIGINT unmounts
// it, so nothing of the daemon stays mounted.
func TestDaemonSignals(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	blob, _ := testLayer(t)
	ctx := context.Background()
	img := pushIndexedImage(ctx, t, reg, blob)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")

	d := startDaemon(t, dir)
	labels := map[string]string{
		snapshots.LabelSnapshotRef: "layer",
		fs.LabelImageRef:           reg.Ref("app", "latest"),
		fs.LabelManifestDigest:     img.Digest.String(),
		fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
	}
	if _, err := d.client(t).Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("unpack Prepare = %v, want AlreadyExists (served lazily)", err)
	}
	if n := fuseMounts(t, root); n != 1 {
		t.Fatalf("%d FUSE mounts under the root after a lazy Prepare, want 1", n)
	}
	d.stop(t, syscall.SIGTERM)
	if n := fuseMounts(t, root); n != 1 {
		t.Fatalf("%d FUSE mounts under the root after SIGTERM, want the lazy layer left for restore", n)
	}

	d2 := startDaemon(t, dir)
	if n := fuseMounts(t, root); n != 1 {
		t.Errorf("%d FUSE mounts after restart, want the lazy layer mounted again", n)
	}
	mounts, err := d2.client(t).View(ctx, "view", "layer")
	if err != nil {
		t.Fatalf("View of the restored layer: %v", err)
	}
	checkFile(t, mounts, "etc/hello", "hello from the registry")
	d2.stop(t, syscall.SIGINT)
	if n := fuseMounts(t, root); n != 0 {
		t.Errorf("%d FUSE mounts under the root after SIGINT, want none", n)
	}
}

// fuseMounts counts the FUSE mounts under dir.
func fuseMounts(t *testing.T, dir string) int {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") {
			n++
		}
	}
	return n
}
