package build_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// The fixture image: the manifest the AWS tool converted, and what it wrote.
const (
	fixtureManifest      = "sha256:8f72808b06c372e29bc961f804a901457dcf1104422591b83c35505ace25f614"
	fixtureManifestSize  = 716
	fixtureOCIIndex      = "sha256:ac1ec407065d97aa4cfbed49e396d9da501224edc8dbc1a1e7198fb7ad1ca098"
	fixtureSociIndex     = "sha256:b732223e4f83885f5e39ae2a5b795bf353a9abd457c7e33df724734b4256365f"
	fixtureAnnotated     = "sha256:e2457d6a6b08ec2b6fb53feb665a004d6f99b9ac53bb79781845f71d3fb96276"
	fixtureSpanSize      = 65536
	refNameAnnotationKey = ocispec.AnnotationRefName
)

// sourceLayout writes an OCI layout holding the fixture's original image
// (manifest, config, three layers) tagged "src", as `soci convert` saw it.
func sourceLayout(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	m := readFixtureBlob(t, fixtureManifest)
	var man ocispec.Manifest
	if err := json.Unmarshal(m, &man); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]ocispec.Descriptor{{Digest: fixtureManifest}, man.Config}, man.Layers...) {
		writeFile(t, filepath.Join(blobs, d.Digest.Encoded()), readFixtureBlob(t, d.Digest))
	}
	writeFile(t, filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	idx, _ := json.Marshal(ocispec.Index{
		Versioned: ocispecVersioned(),
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType:   ocispec.MediaTypeImageManifest,
			Digest:      fixtureManifest,
			Size:        fixtureManifestSize,
			Annotations: map[string]string{refNameAnnotationKey: "src"},
		}},
	})
	writeFile(t, filepath.Join(dir, "index.json"), idx)
	return dir
}

func readFixtureBlob(t testing.TB, d digest.Digest) []byte {
	t.Helper()
	buf, err := os.ReadFile(filepath.Join(ztoctest.LayoutDir(t), "blobs", "sha256", d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func writeFile(t testing.TB, path string, buf []byte) {
	t.Helper()
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func listBlobs(t testing.TB, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestConvertLayoutMatchesReference converts the fixture's original image
// from one OCI layout to another with the options the AWS tool was given
// and expects the very same bytes: the v2 SOCI index, the annotated
// manifest, the OCI image index, index.json, and the same set of blobs.
func TestConvertLayoutMatchesReference(t *testing.T) {
	ctx := context.Background()
	src, err := build.OpenLayout(sourceLayout(t), false)
	if err != nil {
		t.Fatal(err)
	}
	dstDir := filepath.Join(t.TempDir(), "out")
	dst, err := build.OpenLayout(dstDir, true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := build.Convert(ctx, src, "src", dst, "", build.Options{SpanSize: fixtureSpanSize})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if res.Index.Digest != fixtureOCIIndex {
		t.Errorf("OCI index digest %s, want the reference's %s", res.Index.Digest, fixtureOCIIndex)
	}
	if len(res.Converted) != 1 {
		t.Fatalf("converted %d platforms, want 1", len(res.Converted))
	}
	r := res.Converted[0]
	if r.Index.Digest != fixtureSociIndex {
		t.Errorf("SOCI index digest %s, want %s", r.Index.Digest, fixtureSociIndex)
	}
	if r.Annotated.Digest != fixtureAnnotated {
		t.Errorf("annotated manifest digest %s, want %s", r.Annotated.Digest, fixtureAnnotated)
	}
	if len(r.Ztocs) != 3 || len(r.Skipped) != 0 {
		t.Errorf("got %d zTOCs and %d skipped layers, want 3 and 0", len(r.Ztocs), len(r.Skipped))
	}
	want, _ := os.ReadFile(filepath.Join(ztoctest.LayoutDir(t), "index.json"))
	got, _ := os.ReadFile(filepath.Join(dstDir, "index.json"))
	if !bytes.Equal(got, want) {
		t.Errorf("index.json:\n got %s\nwant %s", got, want)
	}
	gotBlobs, wantBlobs := listBlobs(t, dstDir), listBlobs(t, ztoctest.LayoutDir(t))
	// The reference layout also holds the original manifest (it was in
	// containerd's store); ours holds only what the new index references.
	wantBlobs = remove(wantBlobs, digest.Digest(fixtureManifest).Encoded())
	if !equalStrings(gotBlobs, wantBlobs) {
		t.Errorf("blobs:\n got %v\nwant %v", gotBlobs, wantBlobs)
	}
}

// TestConvertLayoutNoZtocs: every layer under the minimum size → a clear
// error wrapping ErrNoZtocs, and no tag written.
func TestConvertLayoutNoZtocs(t *testing.T) {
	ctx := context.Background()
	src, err := build.OpenLayout(sourceLayout(t), false)
	if err != nil {
		t.Fatal(err)
	}
	dstDir := t.TempDir()
	dst, err := build.OpenLayout(dstDir, true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = build.Convert(ctx, src, "src", dst, "out", build.Options{MinLayerSize: 100 << 20})
	if !errors.Is(err, build.ErrNoZtocs) {
		t.Fatalf("Convert: %v, want ErrNoZtocs", err)
	}
	if _, err := dst.Resolve(ctx, "out"); err == nil {
		t.Errorf("tag \"out\" exists after a failed convert")
	}
}

// TestConvertLayoutCorruptLayer: a layer whose bytes do not match its
// digest fails the convert, names the layer, and leaves no tag.
func TestConvertLayoutCorruptLayer(t *testing.T) {
	ctx := context.Background()
	dir := sourceLayout(t)
	var man ocispec.Manifest
	_ = json.Unmarshal(readFixtureBlob(t, fixtureManifest), &man)
	victim := man.Layers[1].Digest
	path := filepath.Join(dir, "blobs", "sha256", victim.Encoded())
	buf, _ := os.ReadFile(path)
	buf[len(buf)/2] ^= 0xff
	writeFile(t, path, buf)
	src, _ := build.OpenLayout(dir, false)
	dst, _ := build.OpenLayout(t.TempDir(), true)
	_, err := build.Convert(ctx, src, "src", dst, "out", build.Options{SpanSize: fixtureSpanSize})
	if err == nil {
		t.Fatal("Convert of a corrupt layer succeeded")
	}
	if !bytes.Contains([]byte(err.Error()), []byte(victim.String())) {
		t.Errorf("error %q does not name the corrupt layer %s", err, victim)
	}
	if _, err := dst.Resolve(ctx, "out"); err == nil {
		t.Errorf("tag \"out\" exists after a failed convert")
	}
}

func remove(ss []string, s string) []string {
	var out []string
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func ocispecVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }
