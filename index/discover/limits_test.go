package discover

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// recorder is an HTTP transport that logs request paths and can rewrite
// answers, standing in for a registry that lies.
type recorder struct {
	mu     sync.Mutex
	paths  []string
	answer func(*http.Request, *http.Response) // may replace resp.Body
}

func (rec *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rec.mu.Lock()
	rec.paths = append(rec.paths, req.URL.Path)
	rec.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && rec.answer != nil {
		rec.answer(req, resp)
	}
	return resp, err
}

// requested reports whether a request path contained s.
func (rec *recorder) requested(s string) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range rec.paths {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// since returns the paths requested after the first n.
func (rec *recorder) since(n int) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.paths[n:]...)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.paths)
}

// through returns opts with every registry request going through rec.
func through(rec *recorder, opts Options) Options {
	opts.NewRepository = func(name string) (*orasremote.Repository, error) {
		repo, err := orasremote.NewRepository(name)
		if err != nil {
			return nil, err
		}
		repo.PlainHTTP = true
		repo.Client = &auth.Client{Client: &http.Client{Transport: rec}}
		return repo, nil
	}
	return opts
}

// spannedLayer is a gzip layer of incompressible files, so that its zTOC
// (64 KiB spans) has several spans.
func spannedLayer(t testing.TB, names ...string) []byte {
	t.Helper()
	var files []ztoctest.File
	for _, n := range names {
		body := make([]byte, 200<<10)
		rand.Read(body)
		files = append(files, ztoctest.File{Name: n, Mode: 0o644, Body: body})
	}
	return ztoctest.Layer(t, files, ztoctest.LayerOptions{Gzip: true})
}

// v1Image pushes an image of the given layers and a v1 index for it to
// repo "app" of an olareg registry (referrers API).
func v1Image(t *testing.T, layers ...[]byte) (*regtest.Registry, string, image, []ocispec.Descriptor) {
	t.Helper()
	r := regtest.Start(t, regtest.KindOlareg)
	m := r.PushImageWith(t, "app", regtest.Image{Tag: "v1", Layers: layers})
	img := image{manifest: m, layers: layers}
	ztocs := ztocsFor(t, r, "app", layers)
	pushIndex(t, r, "app", index.NewV1(img.manifest, ztocs, nil))
	return r, r.Ref("app", "v1"), img, ztocs
}

// TestZtocSizeBoundBeforeDownload: a zTOC whose index descriptor is over
// MaxZtocSize is refused with ErrZtocTooLarge and its blob is never
// requested; at the bound it is used.
func TestZtocSizeBoundBeforeDownload(t *testing.T) {
	_, ref, img, ztocs := v1Image(t, layer(t, "a.txt"))
	size := ztocs[0].Size
	l := digest.FromBytes(img.layers[0])

	rec := &recorder{}
	d, _ := newDiscoverer(through(rec, Options{MaxZtocSize: size - 1}))
	_, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l)
	if !errors.Is(err, index.ErrZtocTooLarge) {
		t.Fatalf("LayerZtoc over the size bound: err = %v, want ErrZtocTooLarge", err)
	}
	if rec.requested("/blobs/" + ztocs[0].Digest.String()) {
		t.Fatalf("the zTOC blob was requested although its descriptor is over the bound")
	}

	d, _ = newDiscoverer(through(&recorder{}, Options{MaxZtocSize: size}))
	if _, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l); err != nil {
		t.Fatalf("LayerZtoc at the size bound: %v", err)
	}

	// The default bound: a descriptor just over it is refused unfetched.
	rec = &recorder{}
	d, _ = newDiscoverer(through(rec, Options{}))
	big := ocispec.Descriptor{Digest: digest.FromString("big"), Size: DefaultMaxZtocSize + 1}
	if _, _, err := d.FetchZtoc(ctxT(t), ref, big); !errors.Is(err, index.ErrZtocTooLarge) {
		t.Fatalf("FetchZtoc of a %d byte zTOC with default bounds: err = %v, want ErrZtocTooLarge", big.Size, err)
	}
	if rec.count() != 0 {
		t.Fatalf("%d registry requests for a zTOC over the default bound", rec.count())
	}
}

// endless is a body that never ends, counting what is read of it.
type endless struct {
	io.Reader
	read *atomic.Int64
}

func (e endless) Read(p []byte) (int, error) {
	n, err := e.Reader.Read(p)
	e.read.Add(int64(n))
	return n, err
}

func (endless) Close() error { return nil }

// TestZtocReadBoundedWhenRegistryLies: a registry that answers the zTOC
// blob with more bytes than the index declares (no Content-Length, then
// zeros without end) gets an error after about the declared size is read,
// not a download without end.
func TestZtocReadBoundedWhenRegistryLies(t *testing.T) {
	_, ref, img, ztocs := v1Image(t, layer(t, "a.txt"))
	var read atomic.Int64
	rec := &recorder{answer: func(req *http.Request, resp *http.Response) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/"+ztocs[0].Digest.String()) {
			resp.Body = endless{Reader: io.MultiReader(resp.Body, zeros{}), read: &read}
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		}
	}}
	d, _ := newDiscoverer(through(rec, Options{}))
	_, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", digest.FromBytes(img.layers[0]))
	if err == nil {
		t.Fatal("LayerZtoc accepted a zTOC body longer than its descriptor")
	}
	if n := read.Load(); n > ztocs[0].Size+64<<10 {
		t.Fatalf("read %d bytes of a %d byte zTOC", n, ztocs[0].Size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestZtocEntryAndSpanBounds: a zTOC with more entries or spans than the
// bounds is refused with ErrZtocTooLarge; at the bounds it is used.
func TestZtocEntryAndSpanBounds(t *testing.T) {
	_, ref, img, _ := v1Image(t, spannedLayer(t, "a", "b", "c"))
	l := digest.FromBytes(img.layers[0])
	z, err := ztoc.Build(ctxT(t), bytes.NewReader(img.layers[0]), ztoc.BuildOptions{SpanSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	entries, spans := len(z.TOC), int(z.MaxSpanID)+1
	if spans < 2 {
		t.Fatalf("test layer has %d span(s), want several", spans)
	}
	for _, tc := range []struct {
		name string
		opts Options
		over bool
	}{
		{"entries over", Options{MaxZtocEntries: entries - 1}, true},
		{"entries at", Options{MaxZtocEntries: entries}, false},
		{"spans over", Options{MaxZtocSpans: spans - 1}, true},
		{"spans at", Options{MaxZtocSpans: spans}, false},
		{"no bounds", Options{MaxZtocEntries: -1, MaxZtocSpans: -1, MaxZtocSize: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDiscoverer(tc.opts)
			_, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l)
			switch {
			case tc.over && !errors.Is(err, index.ErrZtocTooLarge):
				t.Fatalf("err = %v, want ErrZtocTooLarge", err)
			case !tc.over && err != nil:
				t.Fatalf("err = %v, want the zTOC", err)
			}
		})
	}
}

// TestZtocBudget: zTOCs handed out count against the budget while in use;
// one that would exceed it is refused with ErrZtocBudget (before the
// download when its descriptor alone is too big), and its share comes back
// once the zTOC holding it is garbage, the Discoverer forcing a collection
// when a zTOC does not fit.
func TestZtocBudget(t *testing.T) {
	_, ref, img, ztocs := v1Image(t, layer(t, "a.txt"), layer(t, "b.txt"))
	l0, l1 := digest.FromBytes(img.layers[0]), digest.FromBytes(img.layers[1])

	probe, _ := newDiscoverer(Options{})
	z, raw, err := probe.FetchZtoc(ctxT(t), ref, ztocs[0])
	if err != nil {
		t.Fatal(err)
	}
	one := heldSize(z, raw)

	rec := &recorder{}
	d, _ := newDiscoverer(through(rec, Options{ZtocBudget: one + one/2}))
	z0, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l0)
	if err != nil {
		t.Fatalf("first zTOC within the budget: %v", err)
	}
	if _, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l1); !errors.Is(err, index.ErrZtocBudget) {
		t.Fatalf("second zTOC over the budget: err = %v, want ErrZtocBudget", err)
	}
	runtime.KeepAlive(z0)
	z0 = nil

	// The Discoverer collects garbage itself when a zTOC does not fit (here
	// without its once-a-second limit), so the dropped zTOC's share returns
	// without the test forcing anything.
	d.budget.reclaimEvery = 0
	for attempt := 1; ; attempt++ {
		_, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l1)
		if err == nil {
			break
		}
		if !errors.Is(err, index.ErrZtocBudget) || attempt == 3 {
			t.Fatalf("after the first zTOC was dropped: err = %v, want the zTOC", err)
		}
	}

	rec = &recorder{}
	small, _ := newDiscoverer(through(rec, Options{ZtocBudget: ztocs[0].Size - 1}))
	if _, err := small.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", l0); !errors.Is(err, index.ErrZtocBudget) {
		t.Fatalf("zTOC bigger than the whole budget: err = %v, want ErrZtocBudget", err)
	}
	if rec.requested("/blobs/" + ztocs[0].Digest.String()) {
		t.Fatal("a zTOC bigger than the whole budget was downloaded")
	}
}

// TestHeldSizeEstimate: the budget's estimate of a decoded zTOC is close
// to the heap it really keeps (live heap after a collection, plus the
// blob), with and without a PAX record per entry.
func TestHeldSizeEstimate(t *testing.T) {
	for _, pax := range []bool{false, true} {
		opts := ztoctest.LayerOptions{Gzip: true, ModTime: time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)}
		if pax {
			opts.ModTime = time.Time{} // ztoctest's default has nanoseconds: a PAX mtime record
		}
		files := make([]ztoctest.File, 5000)
		for i := range files {
			files[i] = ztoctest.File{Name: fmt.Sprintf("usr/lib/python3/site-packages/pkg%04d/module_%06d.py", i/100, i), Mode: 0o644, Body: ztoctest.Content(uint64(i), 100)}
		}
		l := ztoctest.Layer(t, files, opts)
		built, err := ztoc.Build(ctxT(t), bytes.NewReader(l), ztoc.BuildOptions{SpanSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := ztoc.Marshal(built)
		if err != nil {
			t.Fatal(err)
		}
		built = nil
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		z, err := ztoc.Unmarshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		live := int64(after.HeapAlloc) - int64(before.HeapAlloc) + int64(len(raw))
		est := heldSize(z, raw)
		t.Logf("pax %v: %d entries, zTOC %d B, live %d B, estimate %d B", pax, len(z.TOC), len(raw), live, est)
		if est < live*9/10 || est > live*3/2 {
			t.Errorf("pax %v: estimate %d B for %d B live", pax, est, live)
		}
		runtime.KeepAlive(z)
	}
}
