package span

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/ztoc"
)

// scriptsLayer is a gzip tar of n small shell scripts that each say SAFE,
// with padding between them so the layer has many spans.
func scriptsLayer(t testing.TB, n int, extra ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		script := []byte(fmt.Sprintf("#!/bin/sh\necho SAFE %d\n", i))
		pad := fileContent(uint64(i), 20<<10)
		for _, f := range []testFile{{fmt.Sprintf("bin/s%02d.sh", i), script}, {fmt.Sprintf("pad/p%02d", i), pad}} {
			h := &tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.data)), ModTime: mtime, Typeflag: tar.TypeReg}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(f.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, h := range extra {
		h.ModTime = mtime
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// buildZtoc builds layer's zTOC with spanSize and passes it through the
// codec, as a mount gets it.
func buildZtoc(t testing.TB, layer []byte, spanSize int64, edit func(z *ztoc.Ztoc)) *ztoc.Ztoc {
	t.Helper()
	z, err := ztoc.Build(context.Background(), bytes.NewReader(layer), ztoc.BuildOptions{SpanSize: spanSize})
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(z)
	}
	b, err := ztoc.Marshal(z)
	if err != nil {
		t.Fatal(err)
	}
	if z, err = ztoc.Unmarshal(b); err != nil {
		t.Fatalf("the edited zTOC must still decode and validate: %v", err)
	}
	return z
}

// complete drives FetchNext to the end, as fs/bgfetch does.
func complete(t testing.TB, m *Manager) error {
	t.Helper()
	for range 10000 {
		_, done, err := m.FetchNext(context.Background())
		if done {
			return err
		}
		if err != nil {
			t.Fatalf("FetchNext: transient error %v", err)
		}
	}
	t.Fatal("FetchNext never finished")
	return nil
}

// TestPassFailsForgedWindows: a zTOC whose checkpoint windows had SAFE
// replaced by EVIL keeps every digest right (they cover compressed bytes
// only) and serves EVIL from the spans resumed there. The completion pass
// must fail the layer, after which nothing is served.
func TestPassFailsForgedWindows(t *testing.T) {
	layer := scriptsLayer(t, 60)
	forged := 0
	z := buildZtoc(t, layer, 16<<10, func(z *ztoc.Ztoc) {
		for i := range z.Gzip.Checkpoints {
			w := z.Gzip.Checkpoints[i].Window
			if bytes.Contains(w, []byte("SAFE")) {
				copy(w, bytes.ReplaceAll(w, []byte("SAFE"), []byte("EVIL")))
				forged++
			}
		}
	})
	if forged == 0 {
		t.Fatal("no window holds SAFE: the test layer is wrong")
	}
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(z, memBlob(layer), c, Options{LayerDigest: digest.FromBytes(layer)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	evil := 0
	for i := range z.TOC {
		e := &z.TOC[i]
		if e.Type != ztoc.TypeReg || e.UncompressedSize > 100 {
			continue
		}
		got, err := readFile(context.Background(), m, e, 4096)
		if err == nil && bytes.Contains(got, []byte("EVIL")) {
			evil++
		}
	}
	t.Logf("%d scripts read EVIL before the pass (%d windows forged)", evil, forged)
	err = complete(t, m)
	if !errors.Is(err, ErrLayerFailed) || !errors.Is(err, ztoc.ErrMismatch) {
		t.Fatalf("completion = %v, want a layer failure wrapping ztoc.ErrMismatch", err)
	}
	if m.Complete() {
		t.Error("a forged layer reports complete")
	}
	if _, err := m.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, ErrLayerFailed) {
		t.Errorf("read after the failure = %v, want ErrLayerFailed", err)
	}
}

// TestPassFailsTruncatedTOC: a TOC cut before the last entries (a fixed
// etc/passwd and a whiteout that the attacker wants hidden) must fail the
// layer, although every listed entry matches its header.
func TestPassFailsTruncatedTOC(t *testing.T) {
	layer := scriptsLayer(t, 3,
		&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "etc/.wh.shadow", Typeflag: tar.TypeReg, Mode: 0o644})
	z := buildZtoc(t, layer, 16<<10, func(z *ztoc.Ztoc) { z.TOC = z.TOC[:len(z.TOC)-2] })
	m, err := New(z, memBlob(layer), newMemCache(), Options{LayerDigest: digest.FromBytes(layer)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := complete(t, m); !errors.Is(err, ErrLayerFailed) || !errors.Is(err, ztoc.ErrMismatch) {
		t.Fatalf("completion = %v, want a layer failure wrapping ztoc.ErrMismatch", err)
	}
}

// TestPassGoesOnWhenTheCacheIsFull: a cache that refuses every write (a
// full disk) must not stop verification: the layer completes, verified,
// and reads are still served.
func TestPassGoesOnWhenTheCacheIsFull(t *testing.T) {
	layer := scriptsLayer(t, 20)
	z := buildZtoc(t, layer, 16<<10, nil)
	full := newMemCache()
	full.refuse = true
	m, err := New(z, memBlob(layer), full, Options{LayerDigest: digest.FromBytes(layer)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := complete(t, m); err != nil {
		t.Fatalf("completion over a full cache = %v", err)
	}
	if !m.Complete() || m.Failed() != nil {
		t.Fatalf("complete=%v failed=%v, want a complete, verified layer", m.Complete(), m.Failed())
	}
	e := &z.TOC[0]
	got, err := readFile(context.Background(), m, e, 4096)
	if err != nil || !bytes.HasPrefix(got, []byte("#!/bin/sh")) {
		t.Fatalf("read %s after completion: %q, %v", e.Name, got, err)
	}
}

// TestPassCompletesHonestLayer: an honest layer read partly on demand
// completes, and the spans served before match the stream.
func TestPassCompletesHonestLayer(t *testing.T) {
	layer := scriptsLayer(t, 40)
	z := buildZtoc(t, layer, 16<<10, nil)
	c := newMemCache()
	m, err := New(z, memBlob(layer), c, Options{LayerDigest: digest.FromBytes(layer), HotSpans: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := 0; i < len(z.TOC); i += 7 {
		if _, err := readFile(context.Background(), m, &z.TOC[i], 4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := complete(t, m); err != nil || !m.Complete() {
		t.Fatalf("completion = %v, complete=%v", err, m.Complete())
	}
	if fetched, total := m.Progress(); fetched != total {
		t.Errorf("progress %d/%d after completion", fetched, total)
	}
}

// flakyBlob fails every other range request, as a registry that drops
// connections does.
type flakyBlob struct {
	memBlob
	calls int
}

func (b *flakyBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	b.calls++
	if b.calls%2 == 1 {
		return nil, errors.New("connection reset (test)")
	}
	return b.memBlob.FetchRange(ctx, start, end)
}

// TestPassResumesAfterNetworkErrors: a failed fetch leaves the pass where
// it was (a transient error, not done); the next steps go on from there
// and the layer completes, verified, with no byte fed twice.
func TestPassResumesAfterNetworkErrors(t *testing.T) {
	layer := scriptsLayer(t, 400) // several 4 MiB pass chunks
	z := buildZtoc(t, layer, 64<<10, nil)
	blob := &flakyBlob{memBlob: memBlob(layer)}
	m, err := New(z, blob, newMemCache(), Options{LayerDigest: digest.FromBytes(layer)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	failures := 0
	for range 1000 {
		_, done, err := m.FetchNext(context.Background())
		if err != nil && !done {
			failures++
			continue
		}
		if err != nil {
			t.Fatalf("completion failed: %v", err)
		}
		if done {
			break
		}
	}
	if !m.Complete() || m.Failed() != nil || failures == 0 {
		t.Fatalf("complete=%v failed=%v after %d transient failures", m.Complete(), m.Failed(), failures)
	}
}
