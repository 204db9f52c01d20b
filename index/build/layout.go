package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
)

// LayoutPrefix marks a CLI reference to an OCI image layout directory:
// "oci:PATH" or "oci:PATH:TAG".
const LayoutPrefix = "oci:"

// ParseLayoutRef splits "oci:PATH[:TAG]" into PATH and TAG. ok is false
// when s does not start with LayoutPrefix. A final ":x" counts as a tag only
// when x is a valid tag (so "oci:/a:b/c" is the path "/a:b/c").
func ParseLayoutRef(s string) (path, tag string, ok bool) {
	rest, ok := strings.CutPrefix(s, LayoutPrefix)
	if !ok {
		return "", "", false
	}
	if i := strings.LastIndexByte(rest, ':'); i > 0 && validTag(rest[i+1:]) {
		return rest[:i], rest[i+1:], true
	}
	return rest, "", true
}

// validTag reports whether s matches the distribution-spec tag grammar
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func validTag(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if i > 0 {
			ok = ok || c == '.' || c == '-'
		}
		if !ok {
			return false
		}
	}
	return true
}

// Layout is an OCI image layout directory used as a source or destination
// (oras Target). Blobs are stored through oras's oci.Storage (write to a
// temp file, verify, rename); index.json is kept by Layout itself so that it
// lists only what was tagged, as the AWS tooling writes it, rather than
// every manifest pushed.
type Layout struct {
	root  string
	blobs *oci.Storage
	// mu serialises read-modify-write of index.json.
	mu sync.Mutex
}

// OpenLayout opens the layout at root. With create, a missing or empty
// directory is initialised; otherwise root must already be a layout.
func OpenLayout(root string, create bool) (*Layout, error) {
	layoutFile := filepath.Join(root, ocispec.ImageLayoutFile)
	if _, err := os.Stat(layoutFile); err != nil {
		if !create || !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open OCI layout %s: %w", root, err)
		}
		if err := initLayout(root); err != nil {
			return nil, err
		}
	} else if err := checkLayoutFile(layoutFile); err != nil {
		return nil, err
	}
	blobs, err := oci.NewStorage(root)
	if err != nil {
		return nil, fmt.Errorf("open OCI layout %s: %w", root, err)
	}
	return &Layout{root: root, blobs: blobs}, nil
}

func initLayout(root string) error {
	if err := os.MkdirAll(filepath.Join(root, ocispec.ImageBlobsDir), 0o755); err != nil {
		return fmt.Errorf("create OCI layout %s: %w", root, err)
	}
	buf, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeFileAtomic(filepath.Join(root, ocispec.ImageLayoutFile), buf); err != nil {
		return fmt.Errorf("create OCI layout %s: %w", root, err)
	}
	return nil
}

func checkLayoutFile(path string) error {
	buf, err := readSmallFile(path)
	if err != nil {
		return fmt.Errorf("open OCI layout: %w", err)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(buf, &l); err != nil || l.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("open OCI layout: %s is not an OCI layout file (version %q, err %v)", path, l.Version, err)
	}
	return nil
}

// Root returns the layout directory.
func (l *Layout) Root() string { return l.root }

// Fetch opens a blob.
func (l *Layout) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	return l.blobs.Fetch(ctx, d)
}

// Exists reports whether a blob is present.
func (l *Layout) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	return l.blobs.Exists(ctx, d)
}

// Push stores a blob, verifying its size and digest.
func (l *Layout) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	return l.blobs.Push(ctx, d, r)
}

// Resolve finds a manifest in index.json: by the ref-name annotation, by
// digest, or, for an empty ref, the only manifest listed.
func (l *Layout) Resolve(_ context.Context, ref string) (ocispec.Descriptor, error) {
	l.mu.Lock()
	idx, err := l.readIndex()
	l.mu.Unlock()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var found []ocispec.Descriptor
	for _, d := range idx.Manifests {
		name := d.Annotations[ocispec.AnnotationRefName]
		if ref == "" || name == ref || d.Digest.String() == ref {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0:
		return ocispec.Descriptor{}, fmt.Errorf("resolve %q in OCI layout %s: %w", ref, l.root, errdef.ErrNotFound)
	case len(found) > 1 && ref == "":
		return ocispec.Descriptor{}, fmt.Errorf("resolve OCI layout %s: it lists %d manifests; name one with oci:PATH:TAG", l.root, len(found))
	}
	d := found[0]
	d.Annotations = withoutRefName(d.Annotations)
	return d, nil
}

// Tag lists d in index.json under ref, replacing what ref named before. An
// empty ref replaces every untagged entry.
func (l *Layout) Tag(_ context.Context, d ocispec.Descriptor, ref string) error {
	if _, err := digest.Parse(d.Digest.String()); err != nil {
		return fmt.Errorf("tag %q in OCI layout %s: %w", ref, l.root, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	idx, err := l.readIndex()
	if err != nil {
		return err
	}
	kept := idx.Manifests[:0]
	for _, e := range idx.Manifests {
		if e.Annotations[ocispec.AnnotationRefName] != ref {
			kept = append(kept, e)
		}
	}
	entry := ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: d.ArtifactType}
	if ref != "" {
		entry.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	}
	idx.Manifests = append(kept, entry)
	buf, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("encode index.json of %s: %w", l.root, err)
	}
	if err := writeFileAtomic(filepath.Join(l.root, ocispec.ImageIndexFile), buf); err != nil {
		return fmt.Errorf("tag %q in OCI layout %s: %w", ref, l.root, err)
	}
	return nil
}

// readIndex reads index.json; a missing one is an empty index.
func (l *Layout) readIndex() (*ocispec.Index, error) {
	idx := &ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	buf, err := readSmallFile(filepath.Join(l.root, ocispec.ImageIndexFile))
	if errors.Is(err, os.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read index.json of OCI layout %s: %w", l.root, err)
	}
	if err := json.Unmarshal(buf, idx); err != nil {
		return nil, fmt.Errorf("decode index.json of OCI layout %s: %w", l.root, err)
	}
	return idx, nil
}

func withoutRefName(a map[string]string) map[string]string {
	if _, ok := a[ocispec.AnnotationRefName]; !ok {
		return a
	}
	out := make(map[string]string, len(a))
	for k, v := range a {
		if k != ocispec.AnnotationRefName {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// readSmallFile reads a metadata file, refusing one over MaxManifestBytes.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, MaxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(buf)) > MaxManifestBytes {
		return nil, fmt.Errorf("%s exceeds the %d-byte limit", path, MaxManifestBytes)
	}
	return buf, nil
}

// writeFileAtomic writes a file through a temp file and a rename, so a
// crash never leaves a half-written index.json.
func writeFileAtomic(path string, buf []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
