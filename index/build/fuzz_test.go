package build

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

// FuzzImageEntries feeds arbitrary bytes as the root manifest or index of
// an image (and as the config of a single-manifest image): decoding and
// platform selection must return errors, never panic or hang.
func FuzzImageEntries(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"platform":{"os":"linux","architecture":"amd64"}}]}`), true)
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`), false)
	f.Add([]byte(`<html>sign in</html>`), false)
	f.Fuzz(func(t *testing.T, buf []byte, asIndex bool) {
		ctx := context.Background()
		store := memory.New()
		cfg := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, []byte("{}"))
		_ = store.Push(ctx, cfg, bytes.NewReader([]byte("{}")))
		mt := ocispec.MediaTypeImageManifest
		if asIndex {
			mt = ocispec.MediaTypeImageIndex
		}
		root := content.NewDescriptorFromBytes(mt, buf)
		if err := store.Push(ctx, root, bytes.NewReader(buf)); err != nil {
			return
		}
		entries, _, err := imageEntries(ctx, store, root, "fuzz")
		if err != nil {
			return
		}
		_, _ = selectManifests(entries, Options{AllPlatforms: !asIndex})
		_, _ = selectManifests(entries, Options{})
	})
}

// FuzzLayout feeds arbitrary index.json content and layout references:
// parsing and resolving must fail cleanly.
func FuzzLayout(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`), "oci:/x/y:v1")
	f.Add([]byte(`[]`), "oci:a:b:c")
	f.Add([]byte(`{"manifests":null}`), "docker.io/x")
	f.Fuzz(func(t *testing.T, indexJSON []byte, ref string) {
		path, tag, ok := ParseLayoutRef(ref)
		if ok && !strings.HasPrefix(ref, LayoutPrefix+path) {
			t.Fatalf("ParseLayoutRef(%q) = %q, %q: path is not a prefix", ref, path, tag)
		}
		if tag != "" && !validTag(tag) {
			t.Fatalf("ParseLayoutRef(%q) returned invalid tag %q", ref, tag)
		}
		dir := t.TempDir()
		l, err := OpenLayout(dir, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.json"), indexJSON, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = l.Resolve(context.Background(), tag)
	})
}
