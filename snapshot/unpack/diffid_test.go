package unpack

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/log/logtest"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestUnpackWithoutDiffIDLabel is an unpack as containerd 1.7 (inside
// nerdctl 1.7) asks for it: image, manifest and layer labels but no diffID
// label. The diffID comes from the image config, and a config whose diffID
// does not match the layer is refused as with the label.
func TestUnpackWithoutDiffIDLabel(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	blob, diffID := testLayer(t)
	good := reg.PushImage(t, "app", [][]byte{blob}, nil)
	layer := digest.FromBytes(blob)
	other := reg.PushImage(t, "app", [][]byte{[]byte("not this layer")}, []string{ocispec.MediaTypeImageLayer})
	lying := pushWithDiffIDs(t, reg, "app", blob, digest.FromString("another tar"))
	labels := func(manifest digest.Digest) map[string]string {
		return map[string]string{
			snapshotters.TargetRefLabel:            reg.Host + "/app:latest",
			snapshotters.TargetLayerDigestLabel:    layer.String(),
			snapshotters.TargetManifestDigestLabel: manifest.String(),
		}
	}
	ctx := logtest.WithT(context.Background(), t)

	dir := t.TempDir()
	if err := testUnpacker().Unpack(ctx, dir, labels(good.Digest)); err != nil {
		t.Fatalf("Unpack without the diffID label = %v (config diffID %s)", err, diffID)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/hello")); err != nil || string(b) != "hello from the registry" {
		t.Errorf("etc/hello = %q, %v", b, err)
	}

	cases := map[string]struct {
		labels map[string]string
		want   string
	}{
		"config diffID wrong":   {labels(lying), "image config says"},
		"layer not in manifest": {labels(other.Digest), "is not in manifest"},
		"manifest absent":       {labels(digest.FromString("absent")), "manifest"},
		"manifest malformed":    {labels("sha256:xyz"), snapshotters.TargetManifestDigestLabel},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := testUnpacker().Unpack(ctx, t.TempDir(), c.labels)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Unpack = %v, want error mentioning %q", err, c.want)
			}
		})
	}
}

// pushWithDiffIDs pushes an image of one gzip layer whose config records
// diffIDs (right or not) and returns its manifest digest.
func pushWithDiffIDs(t *testing.T, reg *regtest.Registry, repo string, blob []byte, diffIDs ...digest.Digest) digest.Digest {
	t.Helper()
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    reg.PushBlob(t, repo, cfg, ocispec.MediaTypeImageConfig),
		Layers:    []ocispec.Descriptor{reg.PushBlob(t, repo, blob, ocispec.MediaTypeImageLayerGzip)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg.PushManifest(t, repo, "", m, ocispec.MediaTypeImageManifest).Digest
}
