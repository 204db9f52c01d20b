package discover

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
)

// The quirks below are ones no registry we can start models: referrers
// answered by HTML, a login redirect, 400, a registry that does not list
// indices pushed before its API was enabled, and broken content. A tiny
// fake serves them; everything else is tested against real registries.

type blob struct {
	mediaType string
	body      []byte
}

// fake is a minimal read-only registry for one repository, "app".
type fake struct {
	content   map[string]blob // by digest or tag
	referrers http.HandlerFunc
	// tamper, when set, rewrites the body served for a reference.
	tamper func(ref string, b []byte) []byte
	// lie, when set, is the Content-Length served instead of the real one.
	lie map[string]int
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(p, "/v2/app/referrers/"):
		if f.referrers == nil {
			http.NotFound(w, r)
			return
		}
		f.referrers(w, r)
	case strings.HasPrefix(p, "/v2/app/manifests/"), strings.HasPrefix(p, "/v2/app/blobs/"):
		ref := p[strings.LastIndex(p, "/")+1:]
		b, ok := f.content[ref]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
			return
		}
		body := b.body
		if f.tamper != nil {
			body = f.tamper(ref, body)
		}
		n := len(body)
		if l, ok := f.lie[ref]; ok {
			n = l
		}
		w.Header().Set("Content-Type", b.mediaType)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		if strings.Contains(p, "/manifests/") {
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(b.body).String())
		}
		if r.Method != http.MethodHead {
			_, _ = w.Write(body[:min(n, len(body))])
		}
	default:
		http.NotFound(w, r)
	}
}

func (f *fake) add(tag, mediaType string, body []byte) ocispec.Descriptor {
	d := digest.FromBytes(body)
	f.content[d.String()] = blob{mediaType, body}
	if tag != "" {
		f.content[tag] = blob{mediaType, body}
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

// newFake serves an image with a v1 index listed only in the fallback tag.
func newFake(t *testing.T) (*fake, *httptest.Server, ocispec.Descriptor, ocispec.Descriptor) {
	f := &fake{content: map[string]blob{}}
	cfg := f.add("", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	l := f.add("", ocispec.MediaTypeImageLayerGzip, layer(t, "a.txt"))
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{l}})
	img := f.add("latest", ocispec.MediaTypeImageManifest, m)
	z := f.add("", index.MediaTypeZtoc, []byte("not really a ztoc"))
	z.Annotations = map[string]string{index.AnnotationLayerDigest: l.Digest.String()}
	idxDesc, idxBytes, err := index.NewV1(img, []ocispec.Descriptor{z}, nil).Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	f.add("", ocispec.MediaTypeImageManifest, idxBytes)
	tagIdx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{idxDesc}})
	f.add(fallbackTag(img.Digest), ocispec.MediaTypeImageIndex, tagIdx)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv, img, idxDesc
}

func hostOfServer(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// TestReferrersUnavailable: answers that mean "no referrers API here" lead
// to the fallback tag, not to an error.
func TestReferrersUnavailable(t *testing.T) {
	login := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, "<html>sign in</html>")
	}))
	t.Cleanup(login.Close)
	cases := map[string]http.HandlerFunc{
		"html 200": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, "<html><body>Welcome</body></html>")
		},
		"login redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, login.URL+"/signin?continue="+r.URL.Path, http.StatusFound)
		},
		"400": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad request", http.StatusBadRequest)
		},
		"404 without NAME_UNKNOWN": func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		},
		"API works but lists nothing": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
			fmt.Fprint(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}`)
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			f, srv, img, want := newFake(t)
			f.referrers = h
			d, _ := newDiscoverer(Options{})
			res, err := d.Find(ctxT(t), hostOfServer(srv)+"/app:latest", img.Digest, "")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			if res.Descriptor.Digest != want.Digest || res.Method != MethodFallbackTag {
				t.Fatalf("Find = %s via %s, want %s via fallback-tag", res.Descriptor.Digest, res.Method, want.Digest)
			}
		})
	}
}

// TestBadContent: broken registry answers give an error naming the
// registry and the step; never a panic or a silently wrong result.
func TestBadContent(t *testing.T) {
	cases := []struct {
		name  string
		setup func(f *fake, img, idx ocispec.Descriptor)
		step  string
	}{
		{"truncated index", func(f *fake, img, idx ocispec.Descriptor) {
			f.lie = map[string]int{idx.Digest.String(): int(idx.Size) / 2}
		}, "fetch SOCI index"},
		{"wrong index digest", func(f *fake, img, idx ocispec.Descriptor) {
			f.tamper = func(ref string, b []byte) []byte {
				if ref == idx.Digest.String() {
					return []byte(strings.Replace(string(b), `"schemaVersion":2`, `"schemaVersion":2 `, 1))
				}
				return b
			}
		}, "fetch SOCI index"},
		{"5 MiB image manifest", func(f *fake, img, idx ocispec.Descriptor) {
			f.tamper = func(ref string, b []byte) []byte {
				if ref == img.Digest.String() {
					return append(b, make([]byte, 5<<20)...)
				}
				return b
			}
		}, "fetch image manifest"},
		{"HTML image manifest", func(f *fake, img, idx ocispec.Descriptor) {
			f.content[img.Digest.String()] = blob{"text/html", []byte("<html>maintenance</html>")}
		}, "fetch image manifest"},
		{"HTML fallback tag", func(f *fake, img, idx ocispec.Descriptor) {
			f.content[fallbackTag(img.Digest)] = blob{ocispec.MediaTypeImageIndex, []byte("<html>maintenance</html>")}
		}, "referrers of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, srv, img, idx := newFake(t)
			c.setup(f, img, idx)
			d, _ := newDiscoverer(Options{})
			res, err := d.Find(ctxT(t), hostOfServer(srv)+"/app:latest", img.Digest, "")
			if err == nil {
				t.Fatalf("Find = %+v, want an error", res.Found)
			}
			if errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("err = %v: broken content must not read as 'no index'", err)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, hostOfServer(srv)+"/app") || !strings.Contains(msg, c.step) {
				t.Fatalf("err = %q, want it to name %s/app and %q", msg, hostOfServer(srv), c.step)
			}
		})
	}
}

// TestFetchZtocBad: zTOC blobs that are truncated, of another digest or
// not a zTOC give clear errors.
func TestFetchZtocBad(t *testing.T) {
	f, srv, img, idxDesc := newFake(t)
	ref := hostOfServer(srv) + "/app:latest"
	d, _ := newDiscoverer(Options{})
	res, err := d.Find(ctxT(t), ref, img.Digest, "")
	if err != nil || res.Descriptor.Digest != idxDesc.Digest {
		t.Fatalf("Find: %v", err)
	}
	zd := res.Index.Ztocs()[0]
	if _, _, err := d.FetchZtoc(ctxT(t), ref, zd); err == nil || !strings.Contains(err.Error(), "decode zTOC") {
		t.Fatalf("not-a-zTOC: err = %v", err)
	}
	f.tamper = func(string, []byte) []byte { return []byte("tampered with, same len") }
	if _, _, err := d.FetchZtoc(ctxT(t), ref, zd); err == nil || !strings.Contains(err.Error(), "fetch zTOC") {
		t.Fatalf("wrong digest: err = %v", err)
	}
	huge := zd
	huge.Size = 1 << 40
	if _, _, err := d.FetchZtoc(ctxT(t), ref, huge); !errors.Is(err, index.ErrZtocTooLarge) || !strings.Contains(err.Error(), "over the") {
		t.Fatalf("huge declared size: err = %v", err)
	}
}
