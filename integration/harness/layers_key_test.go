package harness

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// TestDataParamsKeyStable: the shaping fields added to DataParams are left
// out of the cache key when zero, so layers cached by earlier runs (named
// by the key) are still found.
func TestDataParamsKeyStable(t *testing.T) {
	p := DataParams{Seed: 1, RandomBytes: 6 << 20, TextBytes: 6 << 20, SmallFiles: 2000}
	if got, want := p.key(), "data-f2332c242886aae3"; got != want {
		t.Errorf("key of %+v = %s, want %s (the key of the same params before RandomFileBytes and the Small* fields)", p, got, want)
	}
	p.SmallPerDir = 200
	if p.key() == "data-f2332c242886aae3" {
		t.Errorf("SmallPerDir does not change the key: a differently shaped layer would be read from the cache")
	}
}

// TestDataLayerShape: RandomFileBytes, SmallPerDir and the small-file size
// bounds give the files and directories they name.
func TestDataLayerShape(t *testing.T) {
	p := DataParams{Seed: 3, RandomBytes: 3 << 20, SmallFiles: 10, RandomFileBytes: 1 << 20,
		SmallPerDir: 5, SmallMin: 512, SmallMax: 1024, SmallRandom: true}
	l, err := DataLayer(p, "")
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(l.Blob))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	sizes := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes[h.Name] = h.Size
	}
	for _, name := range []string{"data/random/blob-000", "data/random/blob-002"} {
		if sizes[name] != 1<<20 {
			t.Errorf("%s: %d bytes, want 1 MiB", name, sizes[name])
		}
	}
	if _, ok := sizes["data/random/blob-003"]; ok {
		t.Errorf("a fourth random file for 3 MiB in files of 1 MiB")
	}
	for _, name := range []string{"data/small/d000/f00004", "data/small/d001/f00005", "data/small/d001/f00009"} {
		if s, ok := sizes[name]; !ok || s < 512 || s >= 1024 {
			t.Errorf("%s: %d bytes (present %t), want 512-1023", name, s, ok)
		}
	}
	if _, ok := sizes["data/small/d002/"]; ok {
		t.Errorf("a third directory for 10 files at 5 per directory")
	}
}
