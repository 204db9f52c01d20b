package index

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// fixtureIndexDigest is the v2 index the AWS tool wrote into the layout.
const fixtureIndexDigest = "sha256:b732223e4f83885f5e39ae2a5b795bf353a9abd457c7e33df724734b4256365f"

func fixtureBlob(t testing.TB, d string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ztoctest.LayoutDir(t), "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

// TestFixtureRoundTrip: the AWS-made v2 index decodes, validates, and
// re-encodes to the same bytes (the reference snapshotter's requirement).
func TestFixtureRoundTrip(t *testing.T) {
	raw := fixtureBlob(t, fixtureIndexDigest)
	idx, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if idx.Version() != V2 {
		t.Errorf("Version = %v, want v2", idx.Version())
	}
	out, err := idx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, raw) {
		t.Fatalf("re-encoded index differs:\n got %s\nwant %s", out, raw)
	}
	desc, _, err := idx.Descriptor()
	if err != nil || desc.Digest != fixtureIndexDigest || desc.ArtifactType != ArtifactTypeV2 {
		t.Errorf("Descriptor = %+v, %v", desc, err)
	}
	if n := len(idx.Ztocs()); n != 3 {
		t.Errorf("%d zTOCs, want 3", n)
	}
	z, err := idx.ZtocFor("sha256:a50cd439890f3ee845b511e18cca6979f822b78016edc9b50cdbee092b2aa417")
	if err != nil || z.Digest != "sha256:74d2b15d1ccbd7552b571acff871524d6775d02fc9825362eb1886ad61c0d7ca" {
		t.Errorf("ZtocFor = %v, %v", z.Digest, err)
	}
	if _, err := idx.ZtocFor(digest.FromString("other")); !errors.Is(err, ErrNoZtoc) {
		t.Errorf("ZtocFor(unknown) err = %v, want ErrNoZtoc", err)
	}
}

// TestNewV2MatchesReference: an index built from the same zTOC descriptors
// is byte-identical to the one the AWS tool wrote.
func TestNewV2MatchesReference(t *testing.T) {
	ref, err := Parse(fixtureBlob(t, fixtureIndexDigest))
	if err != nil {
		t.Fatal(err)
	}
	var ztocs []ocispec.Descriptor
	for _, z := range ref.Ztocs() {
		ztocs = append(ztocs, ocispec.Descriptor{
			MediaType: MediaTypeZtoc, Digest: z.Digest, Size: z.Size,
			Annotations: map[string]string{
				AnnotationLayerDigest:    z.Annotations[AnnotationLayerDigest],
				AnnotationLayerMediaType: z.Annotations[AnnotationLayerMediaType],
				AnnotationSpanSize:       "65536",
			},
		})
	}
	idx := NewV2(ztocs, map[string]string{AnnotationBuildToolIdentifier: "AWS SOCI CLI v0.2"})
	desc, _, err := idx.Descriptor()
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != fixtureIndexDigest {
		t.Fatalf("built index digest %s, want %s", desc.Digest, fixtureIndexDigest)
	}
}

func TestNewV1(t *testing.T) {
	subject := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 42,
		Annotations: map[string]string{"dropped": "yes"}, Platform: &ocispec.Platform{OS: "linux"},
	}
	z := ocispec.Descriptor{MediaType: MediaTypeZtoc, Digest: digest.FromString("z"), Size: 7,
		Annotations: map[string]string{AnnotationLayerDigest: digest.FromString("l").String()}}
	idx := NewV1(subject, []ocispec.Descriptor{z}, map[string]string{AnnotationBuildToolIdentifier: "t<&>"})
	b, err := idx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json","digest":"` + EmptyConfigDigest + `","size":2},` +
		`"layers":[{"mediaType":"application/octet-stream","digest":"` + z.Digest.String() + `","size":7,` +
		`"annotations":{"com.amazon.soci.image-layer-digest":"` + digest.FromString("l").String() + `"}}],` +
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + subject.Digest.String() + `","size":42},` +
		`"annotations":{"com.amazon.soci.build-tool-identifier":"t\u003c\u0026\u003e"}}`
	if string(b) != want {
		t.Fatalf("v1 encoding:\n got %s\nwant %s", b, want)
	}
	back, err := Parse(b)
	if err != nil || back.Version() != V1 || back.Manifest.Subject.Digest != subject.Digest {
		t.Fatalf("Parse(v1) = %+v, %v", back, err)
	}
}

func TestParseRejects(t *testing.T) {
	good := string(fixtureBlob(t, fixtureIndexDigest))
	layer0 := "sha256:9592fb23e84d93ee8083e0759b36a34c216e58bbba2ad40546c72f9f550c645c"
	layer1 := "sha256:a50cd439890f3ee845b511e18cca6979f822b78016edc9b50cdbee092b2aa417"
	cases := map[string]struct{ in, want string }{
		"empty":             {"", "decode JSON"},
		"html":              {"<html><body>login</body></html>", "decode JSON"},
		"truncated":         {good[:len(good)/2], "decode JSON"},
		"trailing":          {good + "{}", "trailing data"},
		"array":             {"[]", "decode JSON"},
		"schema 1":          {strings.Replace(good, `"schemaVersion":2`, `"schemaVersion":1`, 1), "schemaVersion"},
		"image index":       {strings.Replace(good, `"mediaType":"application/vnd.oci.image.manifest.v1+json"`, `"mediaType":"application/vnd.oci.image.index.v1+json"`, 1), "mediaType"},
		"artifact manifest": {strings.Replace(good, `"application/vnd.amazon.soci.index.v2+json"`, `"application/vnd.oci.image.config.v1+json"`, 1), "not a SOCI index type"},
		"bad ztoc digest":   {strings.Replace(good, "sha256:73553fbfe34cf664ea07c9f199808124d53ff6768f6f8a4cad7131b5aa280dd9", "sha256:zz", 1), "layers[0] digest"},
		"bad layer digest":  {strings.Replace(good, layer0, "sha256:1234", 1), "image-layer-digest"},
		"no layer digest":   {strings.Replace(good, `"com.amazon.soci.image-layer-digest"`, `"x"`, 1), "without com.amazon.soci.image-layer-digest"},
		"duplicate layer":   {strings.Replace(good, layer1, layer0, 1), "both index layer"},
		"negative size":     {strings.Replace(good, `"size":799744`, `"size":-1`, 1), "negative"},
		"bad config digest": {strings.Replace(good, EmptyConfigDigest, "md5:abc", 1), "config digest"},
		"too big":           {good[:len(good)-1] + `,"x":"` + strings.Repeat("a", MaxSize) + `"}`, "exceeds"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to
// bytes it accepts again with the same meaning.
func FuzzParse(f *testing.F) {
	f.Add(fixtureBlob(f, fixtureIndexDigest))
	b, _ := NewV1(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 1}, nil, nil).Marshal()
	f.Add(b)
	f.Add([]byte(`{"schemaVersion":2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		idx, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		out, err := idx.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed index: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded index rejected: %v", err)
		}
		if again.Version() != idx.Version() || len(again.Ztocs()) != len(idx.Ztocs()) {
			t.Fatalf("re-encoding changed the index")
		}
		out2, _ := again.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("encoding is not stable")
		}
	})
}
