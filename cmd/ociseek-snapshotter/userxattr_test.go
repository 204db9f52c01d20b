package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/internal/regtest"
)

// baseLayer is a gzipped layer with opaque/old, which testLayer's opaque
// directory must hide.
func baseLayer(t *testing.T) []byte {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, h := range []*tar.Header{
		{Name: "opaque/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "opaque/old", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte("old"))
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	return gz.Bytes()
}

// TestUserXattrReachesBothSides: when overlay needs "userxattr" (a user
// namespace), the container's overlay mount carries it and the lazy
// layers answer "user.overlay.opaque", so an opaque directory of an upper
// lazy layer still hides what lower lazy layers have under it. Detection
// gives false here (we are the real root), so the answer is forced.
func TestUserXattrReachesBothSides(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE and overlay mounts")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.Start(t, regtest.KindDistribution)
	top, _ := testLayer(t)
	layers := [][]byte{baseLayer(t), top}
	img := pushIndexedImage(ctx, t, reg, layers...)
	cfg := config.Default()
	cfg.Daemon.Root = t.TempDir()
	cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	cfg.BackgroundFetch.Enable = false
	svc, err := newServiceXattr(ctx, cfg, prometheus.NewRegistry(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.shutdown(ctx, true)

	parent := ""
	for i, blob := range layers {
		target := []string{"base", "top"}[i]
		labels := map[string]string{
			snapshots.LabelSnapshotRef: target,
			fs.LabelImageRef:           reg.Ref("app", "latest"),
			fs.LabelManifestDigest:     img.Digest.String(),
			fs.LabelLayerDigest:        digest.FromBytes(blob).String(),
		}
		if _, err := svc.sn.Prepare(ctx, "extract-"+target, parent, snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("unpack Prepare of %s = %v, want AlreadyExists (lazy)", target, err)
		}
		parent = target
	}
	mounts, err := svc.sn.Prepare(ctx, "container", "top")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || !slices.Contains(mounts[0].Options, "userxattr") {
		t.Fatalf("container mounts = %+v, want overlay with userxattr", mounts)
	}
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	if _, err := os.Stat(filepath.Join(dir, "opaque", "old")); !os.IsNotExist(err) {
		t.Errorf("opaque/old of the lower layer shows through the opaque directory above it: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "hello")); err != nil || string(b) != "hello from the registry" {
		t.Errorf("etc/hello = %q, %v", b, err)
	}
}
