package regtest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// smallLayer is a gzip layer holding one file.
func smallLayer(t *testing.T, name, body string) []byte {
	t.Helper()
	return ztoctest.Layer(t, []ztoctest.File{{Name: name, Mode: 0o644, Body: []byte(body)}}, ztoctest.LayerOptions{Gzip: true})
}

// TestRegistries pushes an image and a referrer to every kind, checks the
// referrer is listed (by API or fallback tag as the kind dictates), then
// restarts the registry and checks the content survived.
func TestRegistries(t *testing.T) {
	for _, kind := range Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := Start(t, kind)
			img := r.PushImage(t, "app", [][]byte{smallLayer(t, "a.txt", "hello")}, nil)
			cfg := r.PushBlob(t, "app", []byte("{}"), "application/vnd.example+json")
			ref := ocispec.Manifest{
				Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
				Config: cfg, Layers: []ocispec.Descriptor{cfg}, Subject: &img,
			}
			b, _ := json.Marshal(ref)
			refDesc := r.PushManifest(t, "app", "", b, ocispec.MediaTypeImageManifest)

			ctx := context.Background()
			_, err := r.Repository(t, "app").Resolve(ctx, "sha256-"+img.Digest.Encoded())
			if wantTag := !kind.HasReferrersAPI(); (err == nil) != wantTag {
				t.Errorf("resolve fallback tag: err %v, want present=%v", err, wantTag)
			}
			list := func() []ocispec.Descriptor {
				var got []ocispec.Descriptor
				err := r.Repository(t, "app").Referrers(ctx, img, "application/vnd.example+json", func(d []ocispec.Descriptor) error {
					got = append(got, d...)
					return nil
				})
				if err != nil {
					t.Fatalf("referrers: %v", err)
				}
				return got
			}
			if got := list(); len(got) != 1 || got[0].Digest != refDesc.Digest {
				t.Fatalf("referrers = %v, want %s", got, refDesc.Digest)
			}
			r.Restart()
			if got := list(); len(got) != 1 || got[0].Digest != refDesc.Digest {
				t.Fatalf("after restart referrers = %v, want %s", got, refDesc.Digest)
			}
			if want := r.Host + "/app@" + img.Digest.String(); r.Ref("app", img.Digest.String()) != want {
				t.Errorf("Ref = %q, want %q", r.Ref("app", img.Digest.String()), want)
			}
		})
	}
}

// TestStartWithAuth: the registry refuses anonymous and wrongly
// credentialed requests, the helpers push with the right credentials, and
// Requests lists what was served.
func TestStartWithAuth(t *testing.T) {
	r := StartWithAuth(t, "alice", "s3cret")
	img := r.PushImage(t, "app", [][]byte{smallLayer(t, "a.txt", "hello")}, nil)

	get := func(user, pass string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+r.Host+"/v2/app/manifests/latest", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("", ""); got != http.StatusUnauthorized {
		t.Errorf("anonymous GET manifest: status %d, want 401", got)
	}
	if got := get("alice", "wrong"); got != http.StatusUnauthorized {
		t.Errorf("wrong password GET manifest: status %d, want 401", got)
	}
	if got := get("alice", "s3cret"); got != http.StatusOK {
		t.Errorf("GET manifest with credentials: status %d, want 200", got)
	}
	if _, err := r.Repository(t, "app").Resolve(context.Background(), img.Digest.String()); err != nil {
		t.Errorf("resolve through Repository: %v", err)
	}

	var refused, manifestGets int
	for _, req := range r.Requests(t) {
		if req.Status == http.StatusUnauthorized {
			refused++
		}
		if req.Method == http.MethodGet && req.Path == "/v2/app/manifests/latest" {
			manifestGets++
		}
	}
	if refused < 2 || manifestGets != 3 {
		t.Errorf("Requests: %d refused (want ≥ 2), %d manifest GETs (want 3): %+v", refused, manifestGets, r.Requests(t))
	}

	dir := r.WriteDockerConfig(t, t.TempDir(), "alice", "s3cret")
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil || !strings.Contains(string(b), r.Host) || !strings.Contains(string(b), "YWxpY2U6czNjcmV0") {
		t.Errorf("docker config %s: %v", b, err)
	}
}
