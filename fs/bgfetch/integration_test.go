package bgfetch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// gzipLayer is a gzip layer of files files of mixed random and
// compressible content, 20-70 KB each.
func gzipLayer(t *testing.T, files int) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	fs := make([]ztoctest.File, files)
	for i := range fs {
		data := make([]byte, 20_000+r.IntN(50_000))
		for j := range data {
			if j%3 == 0 {
				data[j] = byte(r.Uint32())
			} else {
				data[j] = 'a' + byte(j%7)
			}
		}
		fs[i] = ztoctest.File{Name: fmt.Sprintf("f%03d", i), Mode: 0o644, Body: data}
	}
	return ztoctest.Layer(t, fs, ztoctest.LayerOptions{Gzip: true})
}

// TestCompletesRealLayers drives two span managers over a real registry to
// completion, with progress readable on the way and a foreground read in
// between.
func TestCompletesRealLayers(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	s := newScheduler(t, Options{QuietPeriod: 10 * time.Millisecond})
	var managers []*span.Manager
	for i := range 2 {
		layer := gzipLayer(t, 30+i*10)
		z, err := ztoc.Build(context.Background(), bytes.NewReader(layer), ztoc.BuildOptions{SpanSize: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		desc := reg.PushBlob(t, "bg/test", layer, "application/vnd.oci.image.layer.v1.tar+gzip")
		b, err := remote.Open(context.Background(), http.DefaultClient, reg.Ref("bg/test", ""), desc.Digest, remote.Options{PlainHTTP: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := cache.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		m, err := span.New(z, b, c, span.Options{LayerDigest: desc.Digest, Foreground: s.Foreground})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		managers = append(managers, m)
		s.Add(fmt.Sprint(i), m)
	}
	if _, err := managers[0].ReadAt(context.Background(), make([]byte, 1000), 5000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "layers complete", func() bool {
		for i := range managers {
			if st, _ := s.Status(fmt.Sprint(i)); !st.Done {
				return false
			}
		}
		return true
	})
	for i, m := range managers {
		st, _ := s.Status(fmt.Sprint(i))
		if st.Err != nil || st.Fetched != st.Total || !m.Complete() || m.Failed() != nil {
			t.Fatalf("layer %d: status %+v complete=%v failed=%v", i, st, m.Complete(), m.Failed())
		}
	}
}
