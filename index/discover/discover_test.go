package discover

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestFindV1 pushes a v1 index (with subject) and finds it on every leg: by
// the referrers API where there is one, else by the fallback tag; then
// fetches and decodes each layer's zTOC.
func TestFindV1(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			img := pushImage(t, r, "app", "v1", nil, "a.txt", "b.txt")
			want := pushV1(t, r, "app", img, nil)
			d, _ := newDiscoverer(Options{})
			ref := r.Ref("app", "v1")
			res, err := d.Find(ctxT(t), ref, img.manifest.Digest, "")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if res.Descriptor.Digest != want.Digest || res.Method != wantMethod(kind) || res.Repository != r.Host+"/app" {
				t.Fatalf("Find = %s via %s in %s, want %s via %s", res.Descriptor.Digest, res.Method, res.Repository, want.Digest, wantMethod(kind))
			}
			for i, l := range img.layers {
				zd, err := res.Index.ZtocFor(digest.FromBytes(l))
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				z, raw, err := d.FetchZtoc(ctxT(t), ref, zd)
				if err != nil {
					t.Fatalf("FetchZtoc layer %d: %v", i, err)
				}
				if digest.FromBytes(raw) != zd.Digest || len(z.TOC) != 1 {
					t.Fatalf("layer %d: zTOC %d entries", i, len(z.TOC))
				}
			}
			// Concurrent lookups share one cached answer.
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", digest.FromBytes(img.layers[i%2]))
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("LayerZtoc: %v", err)
				}
			}
			if _, err := d.LayerZtoc(ctxT(t), ref, img.manifest.Digest, "", digest.FromString("x")); !errors.Is(err, index.ErrNoZtoc) {
				t.Fatalf("LayerZtoc(other layer) err = %v, want ErrNoZtoc", err)
			}
		})
	}
}

// TestFindV2Annotation: an image manifest annotated with its v2 index is
// found by the annotation, before any referrers lookup.
func TestFindV2Annotation(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			plain := pushImage(t, r, "app", "plain", nil, "a.txt")
			v2 := pushIndex(t, r, "app", index.NewV2(ztocsFor(t, r, "app", plain.layers), nil))
			img := pushImage(t, r, "app", "soci", map[string]string{index.AnnotationIndexDigest: v2.Digest.String()}, "a.txt")
			d, _ := newDiscoverer(Options{})
			res, err := d.Find(ctxT(t), r.Ref("app", "soci"), img.manifest.Digest, "")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if res.Method != MethodV2Annotation || res.Descriptor.Digest != v2.Digest || res.Index.Version() != index.V2 {
				t.Fatalf("Find = %s via %s, want %s via v2-annotation", res.Descriptor.Digest, res.Method, v2.Digest)
			}
			if res.Descriptor.Size != v2.Size {
				t.Errorf("descriptor size %d, want %d", res.Descriptor.Size, v2.Size)
			}
			// The un-annotated image has no index.
			if _, err := d.Find(ctxT(t), r.Ref("app", "plain"), plain.manifest.Digest, ""); !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("Find(plain) err = %v, want ErrNoIndex", err)
			}
			// An explicit digest is used as is, even for the plain image.
			res, err = d.Find(ctxT(t), r.Ref("app", "plain"), plain.manifest.Digest, v2.Digest)
			if err != nil || res.Method != MethodExplicit || res.Descriptor.Digest != v2.Digest {
				t.Fatalf("Find(explicit) = %+v, %v", res, err)
			}
			missing := digest.FromString("nope")
			if _, err := d.Find(ctxT(t), r.Ref("app", "plain"), plain.manifest.Digest, missing); !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("Find(explicit missing) err = %v, want ErrNoIndex", err)
			}
		})
	}
}

// TestChoiceAndList: with several v1 indices, Find picks the newest by the
// created annotation; List returns them all, in that order.
func TestChoiceAndList(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			img := pushImage(t, r, "app", "v1", nil, "a.txt")
			old := pushV1(t, r, "app", img, map[string]string{AnnotationCreated: "2024-01-01T00:00:00Z"})
			undated := pushV1(t, r, "app", img, map[string]string{"x": "undated"})
			newest := pushV1(t, r, "app", img, map[string]string{AnnotationCreated: "2025-06-01T00:00:00Z"})
			d, _ := newDiscoverer(Options{})
			res, err := d.Find(ctxT(t), r.Ref("app", "v1"), img.manifest.Digest, "")
			if err != nil || res.Descriptor.Digest != newest.Digest {
				t.Fatalf("Find = %v, %v; want newest %s", res, err, newest.Digest)
			}
			list, err := d.List(ctxT(t), r.Ref("app", "v1"), img.manifest.Digest)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var got []digest.Digest
			for _, f := range list {
				got = append(got, f.Descriptor.Digest)
			}
			want := []digest.Digest{newest.Digest, old.Digest, undated.Digest}
			if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
				t.Fatalf("List = %v, want %v", got, want)
			}
		})
	}
}

// TestIndexRepo: indices (and zTOCs) kept in a separate repository are found
// only where that repository is configured.
func TestIndexRepo(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			img := pushImage(t, r, "app", "v1", nil, "a.txt")
			want := pushV1(t, r, "app-soci", img, nil)
			ref := r.Ref("app", "v1")

			plain, _ := newDiscoverer(Options{})
			if _, err := plain.Find(ctxT(t), ref, img.manifest.Digest, ""); !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("without index repo: err = %v, want ErrNoIndex", err)
			}
			d, _ := newDiscoverer(Options{IndexRepos: map[string]string{r.Host + "/app": r.Host + "/app-soci"}})
			res, err := d.Find(ctxT(t), ref, img.manifest.Digest, "")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if res.Descriptor.Digest != want.Digest || res.Repository != r.Host+"/app-soci" || res.Method != wantMethod(kind) {
				t.Fatalf("Find = %s in %s via %s", res.Descriptor.Digest, res.Repository, res.Method)
			}
			zd, err := res.Index.ZtocFor(digest.FromBytes(img.layers[0]))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.FetchZtoc(ctxT(t), ref, zd); err != nil {
				t.Fatalf("FetchZtoc from index repo: %v", err)
			}
		})
	}
}

// TestTTL: a failed lookup is retried after the negative TTL, a found one
// is served from cache until the TTL, even with the registry down.
func TestTTL(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			img := pushImage(t, r, "app", "v1", nil, "a.txt")
			d, clk := newDiscoverer(Options{TTL: time.Hour, NegativeTTL: 10 * time.Second})
			ref := r.Ref("app", "v1")
			if _, err := d.Find(ctxT(t), ref, img.manifest.Digest, ""); !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("before push: err = %v, want ErrNoIndex", err)
			}
			want := pushV1(t, r, "app", img, nil)
			if _, err := d.Find(ctxT(t), ref, img.manifest.Digest, ""); !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("within negative TTL: err = %v, want the cached ErrNoIndex", err)
			}
			clk.Advance(11 * time.Second)
			res, err := d.Find(ctxT(t), ref, img.manifest.Digest, "")
			if err != nil || res.Descriptor.Digest != want.Digest {
				t.Fatalf("after negative TTL: %v, %v", res, err)
			}
			r.Stop()
			clk.Advance(59 * time.Minute)
			if res, err := d.Find(ctxT(t), ref, img.manifest.Digest, ""); err != nil || res.Descriptor.Digest != want.Digest {
				t.Fatalf("cached result with registry down: %v, %v", res, err)
			}
			clk.Advance(2 * time.Minute)
			_, err = d.Find(ctxT(t), ref, img.manifest.Digest, "")
			if err == nil || errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("after TTL with registry down: err = %v, want a registry error", err)
			}
			r.Restart()
			clk.Advance(11 * time.Second)
			if _, err := d.Find(ctxT(t), ref, img.manifest.Digest, ""); err != nil {
				t.Fatalf("after restart: %v", err)
			}
		})
	}
}

// TestRegistryUpgrade: indices pushed while the registry had no referrers
// API (kept in the fallback tag) are still found after the API is turned
// on, and List sees each index once although both the API and the tag
// name it. (olareg back-fills its referrers list from storage; the case of
// a registry that does not is covered against a fake in quirks_test.go.)
func TestRegistryUpgrade(t *testing.T) {
	r := regtest.Start(t, regtest.KindOlaregNoReferrers)
	img := pushImage(t, r, "app", "v1", nil, "a.txt")
	want := pushV1(t, r, "app", img, nil)
	r.RestartAs(regtest.KindOlareg)
	d, _ := newDiscoverer(Options{})
	res, err := d.Find(ctxT(t), r.Ref("app", "v1"), img.manifest.Digest, "")
	if err != nil || res.Descriptor.Digest != want.Digest {
		t.Fatalf("Find = %v, %v; want %s", res, err, want.Digest)
	}
	second := pushV1(t, r, "app", img, map[string]string{"n": "2"})
	list, err := d.List(ctxT(t), r.Ref("app", "v1"), img.manifest.Digest)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	seen := map[digest.Digest]int{}
	for _, f := range list {
		seen[f.Descriptor.Digest]++
	}
	if len(list) != 2 || seen[want.Digest] != 1 || seen[second.Digest] != 1 {
		t.Fatalf("List = %+v, want %s and %s once each", list, want.Digest, second.Digest)
	}
}
