package integration

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// Index build flags of the tests: the busybox base (about 1 MiB) stays
// below the minimum layer size, so every index is sparse, as most real
// indices are; 1 MiB spans keep the small data layer several spans long.
var indexFlags = []string{"--min-layer-size", "2000000", "--span-size", "1048576"}

// Snapshot labels the tests check (see the snapshot package).
const (
	labelRemote   = "containerd.io/snapshot/remote"
	labelDecision = "ociseek.io/snapshot/decision"
)

// indexKind names how the test image gets its SOCI index.
type indexKind string

const (
	// v1 index found through the referrers API or the fallback tag.
	indexV1 indexKind = "v1"
	// v2: a SOCI-enabled copy of the image made by ociseek convert.
	indexV2 indexKind = "v2"
)

// lazyImage pushes img to reg (through a counting proxy), indexes it the
// given way with the ociseek binary, and returns the proxy and the
// reference to pull.
func lazyImage(t *testing.T, reg *regtest.Registry, img harness.Image, repo string, kind indexKind, flags []string) (*harness.CountingProxy, string) {
	t.Helper()
	ctx := testContext(t)
	proxy := harness.StartCountingProxy(t, reg.Host)
	if _, err := harness.PushImage(ctx, proxy.Host, repo, "v1", img); err != nil {
		t.Fatal(err)
	}
	ref := proxy.Host + "/" + repo + ":v1"
	var out string
	var err error
	switch kind {
	case indexV1:
		out, err = harness.Run(ctx, 5*time.Minute, tools.Ociseek, append(append([]string{"create"}, flags...), ref)...)
	case indexV2:
		dst := proxy.Host + "/" + repo + ":v1-soci"
		out, err = harness.Run(ctx, 5*time.Minute, tools.Ociseek, append(append([]string{"convert"}, flags...), ref, dst)...)
		ref = dst
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek %s:\n%s", kind, out)
	return proxy, ref
}

// TestLazyPullAndRun is the main scenario on every registry leg: an indexed
// image is pulled with ociseek pull and run with ctr run --snapshotter
// soci. The data layer is a FUSE mount, the small base layer is unpacked by
// the daemon (no zTOC), the container prints the data layer's last file,
// and the registry serves only part of the data layer.
func TestLazyPullAndRun(t *testing.T) {
	img := testImage(t, smallData)
	cases := []struct {
		name string
		reg  regtest.Kind
		kind indexKind
	}{
		{"v2/distribution", regtest.KindDistribution, indexV2},
		{"v1-referrers-api/olareg", regtest.KindOlareg, indexV1},
		{"v1-fallback-tag/distribution", regtest.KindDistribution, indexV1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := regtest.Start(t, tc.reg)
			proxy, ref := lazyImage(t, reg, img, "lazy", tc.kind, indexFlags)
			env := harness.NewEnv(t, tools, harness.EnvOptions{})
			proxy.Reset()
			checkLazyRun(t, env, proxy, ref, img)
			if data := int64(len(img.Layers[1].Blob)); proxy.BlobBytes() > data/2 {
				t.Errorf("registry served %s for pull and run; the data layer is %d bytes: lazy loading fetched too much", proxy, data)
			}
		})
	}
}

// checkLazyRun pulls and runs ref and checks what the user sees and how it
// happened: base layer local-unpack, data layer lazy (a FUSE mount with
// the remote label), the container's output.
func checkLazyRun(t *testing.T, env *harness.Env, proxy *harness.CountingProxy, ref string, img harness.Image) {
	t.Helper()
	ctx := testContext(t)
	out, err := env.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek pull:\n%s", out)
	base, data := img.Layers[0].Digest().String(), img.Layers[1].Digest().String()
	_, rows, err := env.Explain(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if rows[base] != [2]string{"local-unpack", "no-ztoc"} {
		t.Errorf("explain: base layer %v, want local-unpack no-ztoc", rows[base])
	}
	if rows[data] != [2]string{"lazy", "mounted-unverified"} {
		t.Errorf("explain: data layer %v, want lazy mounted-unverified (background completion is off)", rows[data])
	}
	got, err := env.RunContainer(ctx, ref, "lazy")
	if err != nil {
		t.Fatal(err)
	}
	if got != harness.HelloContent {
		t.Errorf("container printed %q, want %q", got, harness.HelloContent)
	}
	t.Logf("registry served %s for pull and run (image: %d bytes)", proxy, imageSize(img))
	mounts, err := env.FUSEMounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].FSType != "fuse.ociseek" {
		t.Errorf("FUSE mounts under the daemon root: %v, want one fuse.ociseek mount (the data layer)", mounts)
	}
	chain := chainIDs(img)
	labels, err := env.SnapshotLabels(ctx, chain[1].String())
	if err != nil {
		t.Fatal(err)
	}
	if labels[labelRemote] != "remote snapshot" || labels[labelDecision] != "lazy" {
		t.Errorf("data layer snapshot labels %v: want %s and decision lazy", labels, labelRemote)
	}
}

// chainIDs returns the chain IDs of img's layers, bottom first.
func chainIDs(img harness.Image) []digest.Digest {
	diffIDs := make([]digest.Digest, len(img.Layers))
	for i, l := range img.Layers {
		diffIDs[i] = l.DiffID
	}
	return identity.ChainIDs(diffIDs)
}

// TestLazyLargeImage is the full-size scenario: a SOCI-enabled (v2) image
// with a data layer of more than 100 MB of random and compressible files
// and thousands of small files. Printing one file must cost less than 10%
// of the image in registry traffic.
func TestLazyLargeImage(t *testing.T) {
	img := testImage(t, largeData)
	reg := regtest.Start(t, regtest.KindDistribution)
	// Default span size (4 MiB), as users index: with smaller spans the
	// zTOC (a 32 KiB window per span) is a larger share of the bytes.
	proxy, ref := lazyImage(t, reg, img, "large", indexV2, []string{"--min-layer-size", "2000000"})
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	proxy.Reset()
	checkLazyRun(t, env, proxy, ref, img)
	size := imageSize(img)
	if got := proxy.BlobBytes(); got*10 >= size {
		t.Errorf("registry served %s before the output; want < 10%% of the image (%d bytes)", proxy, size)
	}
	t.Logf("large image: %d bytes; served %s (%.1f%%)", size, proxy, 100*float64(proxy.BlobBytes())/float64(size))
}
