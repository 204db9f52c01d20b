package integration

import (
	"testing"

	"github.com/ociseek/ociseek/integration/harness"
)

// smallData is the data layer most tests use: big enough for several spans
// and thousands of files, small enough to build and push in seconds.
var smallData = harness.DataParams{Seed: 1, RandomBytes: 6 << 20, TextBytes: 6 << 20, SmallFiles: 2000}

// largeData is the ≥ 100 MB data layer of the main lazy-loading scenario.
var largeData = harness.DataParams{Seed: 2, RandomBytes: 64 << 20, TextBytes: 48 << 20, SmallFiles: 5000}

// testImage builds the two-layer test image: busybox base and a data layer.
func testImage(t *testing.T, data harness.DataParams) harness.Image {
	t.Helper()
	base, err := harness.BusyboxLayer(tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := harness.DataLayer(data, cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	return harness.Image{
		Layers: []harness.Layer{base, layer},
		Cmd:    []string{"/bin/cat", "/" + harness.HelloPath},
	}
}

// imageSize is the total compressed size of img's layers.
func imageSize(img harness.Image) int64 {
	var n int64
	for _, l := range img.Layers {
		n += int64(len(l.Blob))
	}
	return n
}
