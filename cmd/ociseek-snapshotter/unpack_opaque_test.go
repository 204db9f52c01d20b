package main

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/log/logtest"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// TestFailedLocalUnpackKeepsLowerLayers: a layer whose tar marks its root
// opaque but does not hash to the diffID it claims is refused, and the
// snapshot containerd then fills keeps no trace of it. Before the fix the
// refused tar had already been applied and only the directory's entries
// were removed: the directory itself kept trusted.overlay.opaque=y, which
// makes the committed layer hide every layer below it wherever overlay
// honours the marker at a layer's root (the kernel this was written on,
// 6.18, ignores it there, hence the direct xattr check).
func TestFailedLocalUnpackKeepsLowerLayers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the snapshotter mounts overlay and sets trusted xattrs")
	}
	ctx := logtest.WithT(context.Background(), t)
	reg := regtest.Start(t, regtest.KindDistribution)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: ".wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	desc := reg.PushBlob(t, "app", tb.Bytes(), "application/vnd.oci.image.layer.v1.tar")

	sn, err := snapshot.New(ctx, t.TempDir(), noZtocFS{}, snapshot.WithUnpacker(testUnpacker()))
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	// The lower layer: one file, written as containerd's applier would.
	mounts, err := sn.Prepare(ctx, "extract-1 base", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("mounts of the first layer = %+v, want one bind mount", mounts)
	}
	if err := os.WriteFile(filepath.Join(mounts[0].Source, "lower"), []byte("from below"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, "base", "extract-1 base"); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{
		snapshotters.TargetRefLabel:         reg.Host + "/app:latest",
		snapshotters.TargetLayerDigestLabel: desc.Digest.String(),
		snapshots.LabelSnapshotDiffID:       digest.FromString("some other tar").String(),
		snapshots.LabelSnapshotRef:          "top",
	}
	mounts, err = sn.Prepare(ctx, "extract-2 top", "base", snapshots.WithLabels(labels))
	if err != nil {
		t.Fatalf("Prepare of a layer whose unpack fails = %v, want the overlay fallback", err)
	}
	upper := ""
	for _, o := range mounts[0].Options {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			upper = v
		}
	}
	if upper == "" {
		t.Fatalf("fallback mounts %+v have no upperdir", mounts)
	}
	if v, err := unix.Lgetxattr(upper, "trusted.overlay.opaque", make([]byte, 8)); err == nil {
		t.Errorf("the snapshot directory of a refused layer has trusted.overlay.opaque (%d bytes)", v)
	}
	// containerd applies the (here empty) layer and commits it.
	if err := sn.Commit(ctx, "top", "extract-2 top"); err != nil {
		t.Fatal(err)
	}
	info, err := sn.Stat(ctx, "top")
	if err != nil || info.Labels[snapshot.LabelDecisionReason] != string(snapshot.ReasonUnpackFailed) {
		t.Fatalf("Stat(top) = %+v, %v; want reason %s", info, err, snapshot.ReasonUnpackFailed)
	}
	view, err := sn.View(ctx, "view", "top")
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, view, "lower", "from below")
}
