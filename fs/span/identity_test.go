package span

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/ztoc"
)

// memBlob is a BlobReader over bytes in memory: the seam fs/span reads
// through, without a registry.
type memBlob []byte

func (b memBlob) FetchRange(_ context.Context, start, end int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[start:end])), nil
}

// TestTwoZtocsOfOneLayerShareACache mounts one layer twice over one cache,
// with zTOCs of different span sizes (two images sharing a base layer,
// indexed by different tools). Each must keep reading its own files right
// after the other filled the cache.
func TestTwoZtocsOfOneLayerShareACache(t *testing.T) {
	files := smallFiles(120, 3000)
	layer := makeLayer(t, files)
	dgst := digest.FromBytes(layer)
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mgrs []*Manager
	var zs []*ztoc.Ztoc
	for _, spanSize := range []int64{64 << 10, 128 << 10} {
		z, err := ztoc.Build(context.Background(), bytes.NewReader(layer), ztoc.BuildOptions{SpanSize: spanSize})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ztoc.Marshal(z)
		if err != nil {
			t.Fatal(err)
		}
		if z, err = ztoc.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		m, err := New(z, memBlob(layer), c, Options{LayerDigest: dgst, HotSpans: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		mgrs, zs = append(mgrs, m), append(zs, z)
	}
	readAll := func(i int) (wrong int) {
		for _, f := range files {
			var ent *ztoc.FileMetadata
			for j := range zs[i].TOC {
				if zs[i].TOC[j].Name == f.name {
					ent = &zs[i].TOC[j]
				}
			}
			got, err := readFile(context.Background(), mgrs[i], ent, 1<<20)
			if err != nil {
				t.Fatalf("mount %d: read %s: %v", i, f.name, err)
			}
			if !bytes.Equal(got, f.data) {
				wrong++
			}
		}
		return wrong
	}
	readAll(0)
	readAll(1)
	if wrong := readAll(0); wrong > 0 {
		t.Errorf("the 64 KiB-span mount read %d of %d files wrong after the 128 KiB one filled the cache", wrong, len(files))
	}
}

// memCache is a Cache in memory; with refuse set it fails every Put, as a
// full disk does.
type memCache struct {
	mu     sync.Mutex
	vals   map[string][]byte
	refuse bool
}

func newMemCache() *memCache { return &memCache{vals: map[string][]byte{}} }

func (c *memCache) Put(key string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse {
		return fmt.Errorf("cache put %q: %w", key, syscall.ENOSPC)
	}
	c.vals[key] = bytes.Clone(data)
	return nil
}

func (c *memCache) ReadAt(key string, p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vals[key]
	if !ok || off >= int64(len(v)) {
		return 0, fmt.Errorf("cache read %q: miss", key)
	}
	n := copy(p, v[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
