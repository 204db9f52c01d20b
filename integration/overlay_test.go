package integration

import (
	"strings"
	"testing"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestImageWithoutIndexRunsOnOverlay: an image without a SOCI index is
// pulled whole by containerd and runs from overlayfs; explain says so.
func TestImageWithoutIndexRunsOnOverlay(t *testing.T) {
	ctx := testContext(t)
	reg := regtest.Start(t, regtest.KindDistribution)
	proxy := harness.StartCountingProxy(t, reg.Host)
	img := testImage(t, smallData)
	if _, err := harness.PushImage(ctx, proxy.Host, "plain", "v1", img); err != nil {
		t.Fatal(err)
	}
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	ref := proxy.Host + "/plain:v1"
	proxy.Reset()

	out, err := env.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek pull:\n%s", out)
	if got, want := proxy.BlobBytes(), imageSize(img); got < want {
		t.Errorf("registry served %d blob bytes, want the whole image (%d): containerd pulls unindexed layers", got, want)
	}
	got, err := env.RunContainer(ctx, ref, "plain")
	if err != nil {
		t.Fatal(err)
	}
	if got != harness.HelloContent {
		t.Errorf("container printed %q, want %q", got, harness.HelloContent)
	}
	if m, err := env.FUSEMounts(); err != nil || len(m) != 0 {
		t.Errorf("FUSE mounts for an image without index: %v (%v)", m, err)
	}
	_, rows, err := env.Explain(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Layers {
		row, ok := rows[l.Digest().String()]
		if !ok || row != [2]string{"overlay", "no-index"} {
			t.Errorf("explain for layer %s: %v, want overlay no-index", l.Digest(), row)
		}
	}
	if !strings.Contains(out, "no-index") {
		t.Errorf("ociseek pull output does not say why layers are not lazy:\n%s", out)
	}
}
