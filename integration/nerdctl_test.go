package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestNerdctlRunUnchanged: nerdctl v1.7.7 (built from tools/nerdctl), run
// as users run it with --snapshotter soci, starts an indexed image lazily:
// its SOCI label handler gives the daemon what it needs, with no ociseek
// command involved.
func TestNerdctlRunUnchanged(t *testing.T) {
	ctx := testContext(t)
	nerdctl := filepath.Join(os.Getenv(harness.EnvToolsBin), "nerdctl")
	if _, err := os.Stat(nerdctl); err != nil {
		t.Fatalf("nerdctl (v1.7.7, from tools/nerdctl) is missing: %v; run `make tools`", err)
	}
	img := testImage(t, smallData)
	reg := regtest.Start(t, regtest.KindOlareg)
	proxy, ref := lazyImage(t, reg, img, "nerdctl", indexV1, indexFlags)
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
	// Known and not asserted yet: the daemon mounts the data layer lazily
	// (checked below), yet the registry serves the whole image, because
	// nerdctl's containerd 1.7 client also downloads the layer blobs into
	// containerd's content store. Under investigation; the figure is
	// logged so the gap stays visible.
	t.Logf("registry served %s for nerdctl run (image %d bytes)", proxy, imageSize(img))
	_, rows, err := env.Explain(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if row := rows[img.Layers[1].Digest().String()]; row != [2]string{"lazy", "mounted"} {
		t.Errorf("data layer run by nerdctl: explain says %v, want lazy mounted", row)
	}
}
