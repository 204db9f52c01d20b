package integration

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestNerdctlRunUnchanged: nerdctl v1.7.7 (built from tools/nerdctl), run
// as users run it with --snapshotter soci, starts an indexed image lazily:
// its SOCI label handler gives the daemon what it needs, with no ociseek
// command involved. The image is the ≥ 100 MB one, so that the bound on
// what the registry serves before the output (< 10% of the image) is about
// lazy loading and not about the ~1 MiB base layer, which the daemon
// unpacks itself (no zTOC).
//
// How nerdctl pulls (v1.7.7): `run` calls imgutil.EnsureImage → PullImage,
// which, for one platform, passes containerd.WithPullUnpack and, since the
// snapshotter name contains "soci", getSnapshotterOpts' SOCI options:
// snapshotters.AppendInfoHandlerWrapper (the cri.* labels) wrapped by
// soci-snapshotter's source.AppendDefaultLabelsHandlerWrapper
// (remote/soci.size, image.layers.size, soci.index.digest "").
// pull.Pull then runs client.Pull of containerd 1.7.22 in nerdctl's
// process, whose unpacker (pkg/unpack.Unpacker.unpack) Prepares each layer
// and, at the first Prepare that does not answer AlreadyExists, starts
// Unpacker.fetch for that layer AND ALL LAYERS ABOVE IT (layers[i:]),
// lazy ones included. containerd 1.7's unpacker does not send the
// containerd.io/snapshot/diff-id label (2.x does); the daemon's local
// unpack of the base layer used to require it, failed, and left the base
// layer to containerd, whose unpacker then downloaded the whole data layer
// too. The daemon now reads the diffID from the image config
// (cmd/ociseek-snapshotter/diffid.go), every Prepare answers
// AlreadyExists, and nerdctl's client fetches no layer blob at all.
func TestNerdctlRunUnchanged(t *testing.T) {
	ctx := testContext(t)
	nerdctl := harness.Tool(t, "nerdctl") // built from tools/nerdctl when missing
	img := testImage(t, largeData)
	reg := regtest.Start(t, regtest.KindOlareg)
	// Default span size, as in TestLazyLargeImage.
	proxy, ref := lazyImage(t, reg, img, "nerdctl", indexV1, []string{"--min-layer-size", "2000000"})
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	proxy.Reset()
	// Host network: no CNI plugins needed. Plain HTTP for the loopback
	// registry is what --insecure-registry allows.
	out, err := harness.Run(ctx, 3*time.Minute, nerdctl,
		"--address", env.Containerd.Address, "--namespace", harness.Namespace,
		"--data-root", filepath.Join(env.Dir, "nerdctl"), "--snapshotter", "soci",
		"run", "--rm", "--net", "host", "--insecure-registry", ref)
	if err != nil {
		t.Fatal(err)
	}
	if out != harness.HelloContent {
		t.Errorf("nerdctl run printed %q, want %q", out, harness.HelloContent)
	}
	size := imageSize(img)
	t.Logf("registry served %s for nerdctl run (image %d bytes, %.1f%%)", proxy, size, 100*float64(proxy.BlobBytes())/float64(size))
	if got := proxy.BlobBytes(); got*10 >= size {
		t.Errorf("registry served %s before nerdctl run's output; want < 10%% of the image (%d bytes)", proxy, size)
	}
	base, data := img.Layers[0].Digest().String(), img.Layers[1].Digest().String()
	for _, g := range proxy.Gets() {
		if g.Digest == data && g.Range == "" {
			t.Errorf("the data layer was downloaded whole: %s", g)
		}
	}
	_, rows, err := env.Explain(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if row := rows[base]; row != [2]string{"local-unpack", "no-ztoc"} {
		t.Errorf("base layer run by nerdctl: explain says %v, want local-unpack no-ztoc (by the daemon)", row)
	}
	if row := rows[data]; row != [2]string{"lazy", "mounted-unverified"} {
		t.Errorf("data layer run by nerdctl: explain says %v, want lazy mounted-unverified (background completion is off)", row)
	}
}
