package span

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

var modes = map[string]VerifyMode{"strict": VerifyStrict, "deferred": VerifyDeferred}

func mixedFiles() []testFile {
	files := smallFiles(40, 3000)
	files = append(files, testFile{name: "big/one", data: fileContent(99, 900_000)})
	files = append(files, smallFiles(20, 100)...)
	files = append(files, testFile{name: "big/two", data: fileContent(98, 400_000)})
	return files
}

// TestReadFiles reads every file, whole and in odd chunks, in both modes,
// and checks the bytes, the header verification and the progress.
func TestReadFiles(t *testing.T) {
	reg := startMemRegistry(t)
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
			if e.z.NumSpans() < 8 {
				t.Fatalf("only %d spans; the test wants many", e.z.NumSpans())
			}
			m := e.manager(t, Options{Verify: mode})
			ctx := context.Background()
			for i, f := range e.files {
				ent := e.entry(t, f.name)
				if err := m.VerifyEntry(ctx, ent); err != nil {
					t.Fatalf("VerifyEntry(%s): %v", f.name, err)
				}
				got, err := readFile(ctx, m, ent, 1000+i*997)
				if err != nil || !bytes.Equal(got, f.data) {
					t.Fatalf("%s: err=%v, equal=%v", f.name, err, bytes.Equal(got, f.data))
				}
			}
			// A read running past the end of the tar.
			p := make([]byte, 100)
			n, err := m.ReadAt(ctx, p, m.Size()-10)
			if n != 10 || err != io.EOF {
				t.Fatalf("read past end: n=%d err=%v", n, err)
			}
			if fetched, total := m.Progress(); fetched <= 0 || total != int64(len(e.layer)) {
				t.Fatalf("progress %d/%d", fetched, total)
			}
			if err := m.Failed(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFixtures serves each reference-tool fixture from a registry and reads
// every regular file through the span layer.
func TestFixtures(t *testing.T) {
	reg := startMemRegistry(t)
	for _, fx := range ztoctest.Fixtures(t) {
		t.Run(fx.Name, func(t *testing.T) {
			layer := fx.Layer(t)
			z, err := ztoc.Unmarshal(fx.Ztoc(t))
			if err != nil {
				t.Fatal(err)
			}
			desc := reg.PushBlob(t, "span/fixtures", layer, "application/octet-stream")
			b, err := remote.Open(context.Background(), http.DefaultClient, reg.Ref("span/fixtures", ""), desc.Digest, fastRemote)
			if err != nil {
				t.Fatal(err)
			}
			c, err := cache.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(z, b, c, Options{LayerDigest: desc.Digest})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			for _, want := range fx.Expect.TOC {
				if want.ContentSHA256 == "" {
					continue
				}
				var ent *ztoc.FileMetadata
				for i := range z.TOC {
					if z.TOC[i].Name == want.Name && z.TOC[i].UncompressedOffset == want.UncompressedOffset {
						ent = &z.TOC[i]
					}
				}
				if err := m.VerifyEntry(ctx, ent); err != nil {
					t.Fatalf("VerifyEntry(%s): %v", ent.Name, err)
				}
				got, err := readFile(ctx, m, ent, 4096)
				sum := sha256.Sum256(got)
				if err != nil || hex.EncodeToString(sum[:]) != want.ContentSHA256 {
					t.Fatalf("%s: err=%v or wrong content", ent.Name, err)
				}
			}
			completeLayer(t, m)
		})
	}
}

func completeLayer(t *testing.T, m *Manager) {
	t.Helper()
	for range 10_000 {
		_, done, err := m.FetchNext(context.Background())
		if err != nil {
			t.Fatalf("FetchNext: %v", err)
		}
		if done {
			if !m.Complete() {
				t.Fatal("done but not complete")
			}
			return
		}
	}
	t.Fatal("FetchNext never finished")
}

// TestConcurrentReadsFetchOnce: 32 cold readers of one span share a fetch.
func TestConcurrentReadsFetchOnce(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	metrics, _ := NewMetrics(nil)
	m := e.manager(t, Options{Metrics: metrics, FetchAhead: -1})
	ent := e.entry(t, "big/one")
	id := e.z.SpanOf(ent.UncompressedOffset + 300_000)
	s, _ := e.z.Span(id)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			p := make([]byte, 1000)
			off := s.UncompressedStart + int64(g)*1000
			if _, err := m.ReadAt(context.Background(), p, off); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := testutil.ToFloat64(metrics.SpansFetched.WithLabelValues(ReasonDemand)); n != 1 {
		t.Fatalf("%v span fetches, want 1", n)
	}
	if got := e.blob.bytes.Load(); got != s.CompressedSize() {
		t.Fatalf("fetched %d bytes, want the span's %d", got, s.CompressedSize())
	}
}

// tamper returns a copy of layer with one byte flipped in the middle of
// span id.
func tamper(t *testing.T, e *env, id ztoc.SpanID) []byte {
	s, err := e.z.Span(id)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(e.layer)
	bad[(s.CompressedStart+s.CompressedEnd)/2] ^= 0x10
	return bad
}

// TestTamperedSpan: the registry serves a blob with one byte changed. The
// read of that span fails (EIO at the FUSE edge), the layer is failed for
// every later read, nothing of the span is cached, and it is counted.
func TestTamperedSpan(t *testing.T) {
	reg := startMemRegistry(t)
	clean := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	ent := clean.entry(t, "big/one")
	id := clean.z.SpanOf(ent.UncompressedOffset + 100_000)
	e := newEnv(t, reg, mixedFiles(), 128<<10, tamper(t, clean, id))
	metrics, _ := NewMetrics(nil)
	m := e.manager(t, Options{Metrics: metrics, FetchAhead: -1})
	ctx := context.Background()
	p := make([]byte, 4096)
	s, _ := e.z.Span(id)
	if _, err := m.ReadAt(ctx, p, s.UncompressedStart+10); !errors.Is(err, ErrLayerFailed) || !errors.Is(err, ztoc.ErrSpanDigest) {
		t.Fatalf("read of tampered span: %v", err)
	}
	if e.cache.Has(m.cacheKey(id)) {
		t.Fatal("tampered span was cached")
	}
	if _, err := m.ReadAt(ctx, p, 0); !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("read of another span after failure: %v", err)
	}
	if n := testutil.ToFloat64(metrics.VerifyFailures.WithLabelValues(KindSpanDigest)); n != 1 {
		t.Fatalf("verify failures = %v, want 1", n)
	}
}

// TestTamperedDeferred: in deferred mode a small read may be answered from
// the tampered span's unverified prefix, but the background pass detects
// the tampering and fails the layer.
func TestTamperedDeferred(t *testing.T) {
	reg := startMemRegistry(t)
	clean := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	ent := clean.entry(t, "big/one")
	id := clean.z.SpanOf(ent.UncompressedOffset + 100_000)
	e := newEnv(t, reg, mixedFiles(), 128<<10, tamper(t, clean, id))
	m := e.manager(t, Options{Verify: VerifyDeferred, FetchAhead: -1})
	s, _ := e.z.Span(id)
	p := make([]byte, 512)
	_, err := m.ReadAt(context.Background(), p, s.UncompressedStart)
	if err != nil && !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("prefix read: %v", err)
	}
	for range 1000 {
		_, done, err := m.FetchNext(context.Background())
		if errors.Is(err, ErrLayerFailed) {
			break
		}
		if err != nil || done {
			t.Fatalf("pass ended without detecting tampering: done=%v err=%v", done, err)
		}
	}
	if !errors.Is(m.Failed(), ErrLayerFailed) {
		t.Fatalf("layer not failed: %v", m.Failed())
	}
	if e.cache.Has(m.cacheKey(id)) {
		t.Fatal("tampered span was cached")
	}
}

// TestLayerDigestAndTOCChecks: the completion pass fails the layer when the
// blob is not the layer the options name, or a TOC entry lies about a file.
func TestLayerDigestAndTOCChecks(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	m := e.manager(t, Options{LayerDigest: digest.FromString("another layer")})
	var err error
	for done := false; !done && err == nil; {
		_, done, err = m.FetchNext(context.Background())
	}
	if !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("wrong layer digest: %v", err)
	}

	e2 := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	e2.entry(t, "dir3/file3000-00013").Mode = 0o4755 // a hostile index adds setuid
	m2 := e2.manager(t, Options{})
	if err := m2.VerifyEntry(context.Background(), e2.entry(t, "dir3/file3000-00013")); !errors.Is(err, ErrLayerFailed) || !errors.Is(err, ztoc.ErrHeaderMismatch) {
		t.Fatalf("lying TOC entry: %v", err)
	}
	if _, err := m2.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, ErrLayerFailed) {
		t.Fatalf("read after header mismatch: %v", err)
	}
}

// TestBackgroundCompletion: after the pass, every span is verified and
// cached, reads touch no network, and progress is complete.
func TestBackgroundCompletion(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	m := e.manager(t, Options{Verify: VerifyDeferred})
	// Some demand reads first, one of them served from a prefix.
	if _, err := readFile(context.Background(), m, e.entry(t, "dir0/file3000-00000"), 4096); err != nil {
		t.Fatal(err)
	}
	completeLayer(t, m)
	if fetched, total := m.Progress(); fetched != total {
		t.Fatalf("progress %d/%d after completion", fetched, total)
	}
	before := e.blob.bytes.Load()
	for _, f := range e.files {
		got, err := readFile(context.Background(), m, e.entry(t, f.name), 1<<20)
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s after completion: %v", f.name, err)
		}
	}
	if after := e.blob.bytes.Load(); after != before {
		t.Fatalf("reads after completion fetched %d bytes", after-before)
	}
}

// TestCorruptCacheRefetched: a cached span damaged on disk is fetched again.
func TestCorruptCacheRefetched(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	metrics, _ := NewMetrics(nil)
	// No spans kept in memory: the reads must go to the damaged files.
	m := e.manager(t, Options{Metrics: metrics, FetchAhead: -1, HotSpans: -1})
	ent := e.entry(t, "big/two")
	if _, err := readFile(context.Background(), m, ent, 1<<20); err != nil {
		t.Fatal(err)
	}
	// A read is answered before its span's cache write ends: damage the
	// finished files, not ones still being written.
	waitNoFlights(t, m)
	files, _ := filepath.Glob(filepath.Join(e.cache.Dir(), "*"))
	for _, f := range files {
		if err := os.Truncate(f, 1000); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readFile(context.Background(), m, ent, 1<<20)
	if err != nil || !bytes.Equal(got, e.files[len(e.files)-1].data) {
		t.Fatalf("read after cache corruption: %v", err)
	}
	if testutil.ToFloat64(metrics.CacheMisses) == 0 {
		t.Fatal("no cache miss counted")
	}
}

// TestRegistryOutage: with the registry stopped a cold read fails within a
// bound; once it is back, the same read succeeds.
func TestRegistryOutage(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	m := e.manager(t, Options{FetchAhead: -1})
	ent := e.entry(t, "big/one")
	reg.Stop()
	start := time.Now()
	if _, err := readFile(context.Background(), m, ent, 1<<20); err == nil {
		t.Fatal("read with the registry down succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failure took %v", d)
	}
	if m.Failed() != nil {
		t.Fatalf("an outage failed the layer: %v", m.Failed())
	}
	reg.Restart()
	got, err := readFile(context.Background(), m, ent, 1<<20)
	if err != nil || !bytes.Equal(got, e.files[40].data) {
		t.Fatalf("read after restart: %v", err)
	}
}

// TestInterruptedRead: a read whose context ends returns promptly.
func TestInterruptedRead(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	m := e.manager(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.ReadAt(ctx, make([]byte, 100), 1000); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}

func TestHostileGeometry(t *testing.T) {
	reg := startMemRegistry(t)
	e := newEnv(t, reg, mixedFiles(), 128<<10, nil)
	z := *e.z
	gz := *z.Gzip
	gz.Checkpoints = slices.Clone(gz.Checkpoints)
	gz.Checkpoints[2].Out = gz.Checkpoints[1].Out - 1
	z.Gzip = &gz
	if _, err := New(&z, e.blob, e.cache, Options{LayerDigest: e.dgst}); !errors.Is(err, ztoc.ErrInvalid) {
		t.Fatalf("spans not covering the tar: %v", err)
	}
	if _, err := New(e.z, e.blob, e.cache, Options{LayerDigest: e.dgst, MaxSpanBytes: 1000}); !errors.Is(err, ztoc.ErrInvalid) {
		t.Fatalf("oversized spans: %v", err)
	}
}

// waitNoFlights polls until no span of m is being fetched or cached.
func waitNoFlights(t *testing.T, m *Manager) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		m.mu.Lock()
		n := len(m.flights)
		m.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d span flights still running", n)
		}
	}
}
