package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/index/discover"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/snapshot"
	"github.com/ociseek/ociseek/snapshot/unpack"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// testLayer is a gzip layer with a file, a whiteout and an opaque
// directory, and its diffID.
func testLayer(t *testing.T) (blob []byte, diffID digest.Digest) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	add(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "etc/hello", Typeflag: tar.TypeReg, Mode: 0o644}, "hello from the registry")
	add(&tar.Header{Name: "etc/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644}, "")
	add(&tar.Header{Name: "opaque/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "opaque/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644}, "")
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	return gz.Bytes(), digest.FromBytes(tarBuf.Bytes())
}

type pushedLayer struct {
	labels map[string]string
}

func pushLayer(t *testing.T) pushedLayer {
	reg := regtest.Start(t, regtest.KindDistribution)
	blob, diffID := testLayer(t)
	desc := reg.PushBlob(t, "app", blob, "application/vnd.oci.image.layer.v1.tar+gzip")
	return pushedLayer{labels: map[string]string{
		snapshotters.TargetRefLabel:         reg.Host + "/app:latest",
		snapshotters.TargetLayerDigestLabel: desc.Digest.String(),
		snapshots.LabelSnapshotDiffID:       diffID.String(),
		snapshots.LabelSnapshotRef:          "layer",
	}}
}

// testUnpacker is the daemon's unpacker with its default plain-HTTP
// policy (loopback registries over HTTP).
func testUnpacker() *unpack.Unpacker {
	return unpack.New(&auth.Client{Cache: auth.NewCache()}, discover.DefaultPlainHTTP)
}

// noZtocFS is an indexed image's FileSystem for a layer without a zTOC.
type noZtocFS struct{}

func (noZtocFS) Mount(context.Context, string, map[string]string) error {
	return fmt.Errorf("layer: %w", index.ErrNoZtoc)
}
func (noZtocFS) Check(context.Context, string, map[string]string) error {
	return errors.New("not mounted")
}
func (noZtocFS) Unmount(context.Context, string) error { return nil }

// TestLocalUnpackOutcome runs the local-unpack path end to end: the
// snapshotter gets ErrNoZtoc, the daemon's unpacker pulls the layer from a
// real registry, and containerd is told the layer already exists.
func TestLocalUnpackOutcome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the snapshotter mounts overlay")
	}
	l := pushLayer(t)
	ctx := logtest.WithT(context.Background(), t)
	sn, err := snapshot.New(ctx, t.TempDir(), noZtocFS{}, snapshot.WithUnpacker(testUnpacker()))
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	_, err = sn.Prepare(ctx, "extract-1 layer", "", snapshots.WithLabels(l.labels))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare = %v, want AlreadyExists", err)
	}
	info, err := sn.Stat(ctx, "layer")
	if err != nil || info.Labels[snapshot.LabelDecision] != string(snapshot.OutcomeLocalUnpack) {
		t.Fatalf("Stat(layer) = %+v, %v", info, err)
	}
	mounts, err := sn.View(ctx, "view", "layer")
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, mounts, "etc/hello", "hello from the registry")
}

// pushIndexedImage pushes an image of layers to repository "app" of reg,
// tagged latest, and a v1 SOCI index for it (64 KiB spans, every layer
// indexed), as `ociseek create` would; it returns the image manifest.
func pushIndexedImage(ctx context.Context, t *testing.T, reg *regtest.Registry, layers ...[]byte) ocispec.Descriptor {
	t.Helper()
	img := reg.PushImage(t, "app", layers, nil)
	if _, err := build.Create(ctx, reg.Repository(t, "app"), "latest", nil,
		build.CreateOptions{Options: build.Options{SpanSize: 1 << 16}}); err != nil {
		t.Fatalf("create SOCI index: %v", err)
	}
	return img
}
