package regtest

import (
	"context"
	"encoding/json"
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
