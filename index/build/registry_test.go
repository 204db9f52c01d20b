package build_test

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestConvertRegistryMatchesReference pushes the fixture's original image
// to each registry and converts it registry → registry, registry → layout
// and layout → registry; every output must carry the reference's digests.
func TestConvertRegistryMatchesReference(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		srcDir := sourceLayout(t)
		reg.PushLayout(t, srcDir, "src", "v1")
		opts := build.Options{SpanSize: fixtureSpanSize}

		res, err := build.Convert(ctx, reg.Repository(t, "src"), "v1", reg.Repository(t, "dst"), "soci", opts)
		if err != nil {
			t.Fatalf("convert registry → registry: %v", err)
		}
		checkFixtureDigests(t, res)
		got, err := reg.Repository(t, "dst").Resolve(ctx, "soci")
		if err != nil || got.Digest != fixtureOCIIndex {
			t.Errorf("dst:soci resolves to %s (%v), want %s", got.Digest, err, fixtureOCIIndex)
		}

		outDir := t.TempDir()
		out, err := build.OpenLayout(outDir, true)
		if err != nil {
			t.Fatal(err)
		}
		if res, err = build.Convert(ctx, reg.Repository(t, "src"), "v1", out, "", opts); err != nil {
			t.Fatalf("convert registry → layout: %v", err)
		}
		checkFixtureDigests(t, res)
		want, _ := os.ReadFile(filepath.Join(ztoctest.LayoutDir(t), "index.json"))
		if gotJSON, _ := os.ReadFile(filepath.Join(outDir, "index.json")); !bytes.Equal(gotJSON, want) {
			t.Errorf("index.json %s, want %s", gotJSON, want)
		}

		src, _ := build.OpenLayout(srcDir, false)
		if res, err = build.Convert(ctx, src, "src", reg.Repository(t, "fromlayout"), "soci", opts); err != nil {
			t.Fatalf("convert layout → registry: %v", err)
		}
		checkFixtureDigests(t, res)
	})
}

func checkFixtureDigests(t *testing.T, res *build.ConvertResult) {
	t.Helper()
	if res.Index.Digest != fixtureOCIIndex || len(res.Converted) != 1 ||
		res.Converted[0].Index.Digest != fixtureSociIndex || res.Converted[0].Annotated.Digest != fixtureAnnotated {
		t.Errorf("convert produced index %s, SOCI index %v; want %s and %s", res.Index.Digest, res.Converted, fixtureOCIIndex, fixtureSociIndex)
	}
}

// corruptBlob rewrites every file in the registry's storage that holds the
// blob d, with mutate applied; registries serve what is on disk.
func corruptBlob(t *testing.T, reg *regtest.Registry, d ocispec.Descriptor, mutate func([]byte) []byte) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(reg.Dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		if info, err := e.Info(); err != nil || info.Size() != d.Size {
			return err
		}
		buf, err := os.ReadFile(path)
		if err != nil || digest.FromBytes(buf) != d.Digest {
			return err
		}
		n++
		return os.WriteFile(path, mutate(buf), 0o644)
	})
	if err != nil || n == 0 {
		t.Fatalf("corrupt blob %s in %s: %d files, %v", d.Digest, reg.Dir, n, err)
	}
}

// TestCreateBadLayer: a layer whose bytes (as served) do not match its
// digest, or are cut short, fails the create with an error naming the
// registry, the step and the layer; no index is listed and no tag is left.
func TestCreateBadLayer(t *testing.T) {
	cases := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"wrong-digest", func(b []byte) []byte { b[len(b)/2] ^= 0x55; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		// The gzip header's MTIME is covered by no checksum: only the
		// digest check can catch this one.
		{"wrong-digest-mtime", func(b []byte) []byte { b[4] ^= 0x01; return b }},
	}
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ctx := testContext(t)
				repoName := "bad-" + c.name
				// Blobs are stored once per registry: one layer per case.
				layer := tarGz(t, 70+uint64(i), 4)
				img := reg.PushImage(t, repoName, [][]byte{layer}, nil)
				ld := ocispec.Descriptor{Digest: digest.FromBytes(layer), Size: int64(len(layer))}
				corruptBlob(t, reg, ld, c.mutate)
				_, err := build.Create(ctx, reg.Repository(t, repoName), "latest", nil,
					build.CreateOptions{Options: build.Options{SpanSize: testSpan}, Publish: fastPublish})
				if err == nil {
					t.Fatal("Create succeeded on a corrupt layer")
				}
				t.Logf("error: %v", err)
				for _, want := range []string{reg.Host, ld.Digest.String(), "layer"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
				if found := referrers(t, reg, repoName, img); len(found) != 0 {
					t.Errorf("referrers after a failed create: %v", found)
				}
				if _, tagged := tagReferrers(t, reg.Repository(t, repoName), img.Digest); tagged {
					t.Errorf("fallback tag left behind by a failed create")
				}
			})
		}
	})
}

// TestCreateHTMLManifest: a registry front that answers manifest GETs with
// an HTML page (a login portal, a captive proxy) gives an error naming the
// host and the step, not a decode panic. No real registry does this, so a
// reverse proxy in front of a real one injects it.
func TestCreateHTMLManifest(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		reg.PushImage(t, "html", [][]byte{tarGz(t, 8, 2)}, nil)
		target, _ := url.Parse("http://" + reg.Host)
		proxy := httputil.NewSingleHostReverseProxy(target)
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html><body>Please sign in</body></html>")
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		defer front.Close()
		host := strings.TrimPrefix(front.URL, "http://")
		repo, err := orasremote.NewRepository(host + "/html")
		if err != nil {
			t.Fatal(err)
		}
		repo.PlainHTTP = true
		_, err = build.Create(ctx, repo, "latest", nil, build.CreateOptions{Publish: fastPublish})
		if err == nil {
			t.Fatal("Create succeeded against an HTML manifest")
		}
		t.Logf("error: %v", err)
		for _, want := range []string{host, "manifest"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}
