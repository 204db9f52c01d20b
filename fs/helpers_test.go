package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// layerEntries is the content of the test layer: directories, small and
// multi-span files, a symlink, an empty file.
func layerEntries() []ztoctest.File {
	return []ztoctest.File{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/hello.txt", Type: tar.TypeReg, Mode: 0o644, Body: []byte("hello from a lazy layer\n")},
		{Name: "etc/empty", Type: tar.TypeReg, Mode: 0o600},
		{Name: "usr/bin/tool", Type: tar.TypeReg, Mode: 0o755, Body: ztoctest.Content(1, 300<<10)},
		{Name: "usr/share/data.bin", Type: tar.TypeReg, Mode: 0o644, Body: ztoctest.Content(2, 500<<10)},
		{Name: "link", Type: tar.TypeSymlink, Mode: 0o777, Linkname: "etc/hello.txt"},
	}
}

// image is a test image pushed to a real registry, with the zTOC of its
// one layer.
type image struct {
	reg      *regtest.Registry
	ref      LayerRef
	layer    []byte
	ztoc     *ztoc.Ztoc
	entries  []ztoctest.File
	manifest digest.Digest
}

// pushImage pushes a one-layer image to reg and builds its zTOC with small
// spans, so the files span several of them.
func pushImage(t testing.TB, reg *regtest.Registry, repo string) *image {
	t.Helper()
	return pushEntries(t, reg, repo, layerEntries(), 64<<10)
}

// pushEntries pushes a one-layer image of entries to reg and builds the
// layer's zTOC with the given span size.
func pushEntries(t testing.TB, reg *regtest.Registry, repo string, entries []ztoctest.File, spanSize int64) *image {
	t.Helper()
	layer := ztoctest.Layer(t, entries, ztoctest.LayerOptions{Gzip: true})
	z, err := ztoc.Build(context.Background(), bytes.NewReader(layer), ztoc.BuildOptions{SpanSize: spanSize})
	if err != nil {
		t.Fatal(err)
	}
	desc := reg.PushImage(t, repo, [][]byte{layer}, nil)
	img := &image{reg: reg, layer: layer, ztoc: z, entries: entries, manifest: desc.Digest}
	img.ref = LayerRef{
		ImageRef:       reg.Ref(repo, "latest"),
		ManifestDigest: desc.Digest,
		LayerDigest:    digest.FromBytes(layer),
	}
	return img
}

// criLabels are the labels containerd's CRI plugin sends for the layer:
// no size, no index digest.
func (img *image) criLabels() map[string]string {
	return map[string]string{
		"containerd.io/snapshot.ref":                  "sha256:0000000000000000000000000000000000000000000000000000000000000001",
		LabelImageRef:                                 img.ref.ImageRef,
		LabelManifestDigest:                           img.ref.ManifestDigest.String(),
		LabelLayerDigest:                              img.ref.LayerDigest.String(),
		"containerd.io/snapshot/cri.image-layers":     img.ref.LayerDigest.String(),
		"containerd.io/snapshot/remote/soci.whatever": "ignored",
	}
}

// testSource is a ZtocSource serving zTOCs from memory, or failing with
// err; it counts lookups.
type testSource struct {
	mu      sync.Mutex
	ztocs   map[digest.Digest]*ztoc.Ztoc
	err     error
	lookups atomic.Int64
}

func newSource(imgs ...*image) *testSource {
	s := &testSource{ztocs: map[digest.Digest]*ztoc.Ztoc{}}
	for _, img := range imgs {
		s.ztocs[img.ref.LayerDigest] = img.ztoc
	}
	return s
}

func (s *testSource) Lookup(ctx context.Context, l LayerRef) (*ztoc.Ztoc, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	z, ok := s.ztocs[l.LayerDigest]
	if !ok {
		return nil, errors.New("test source: unknown layer")
	}
	return z, nil
}

// blockingSource waits for ctx to end, as a registry that never answers.
type blockingSource struct{}

func (blockingSource) Lookup(ctx context.Context, _ LayerRef) (*ztoc.Ztoc, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// remoteBlobs reaches the test registries over plain HTTP, retrying little
// so that outages show quickly.
func remoteBlobs() RemoteBlobs {
	return RemoteBlobs{
		Client:    http.DefaultClient,
		PlainHTTP: func(string) bool { return true },
		Options:   remote.Options{MaxRetries: 1, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
	}
}

// newFS returns an FS under a temporary root, closed when the test ends.
func newFS(t testing.TB, src ZtocSource, opts ...Opt) *FS {
	t.Helper()
	return newRootFS(t, t.TempDir(), src, opts...)
}

// newRootFS returns an FS under root, closed when the test ends.
func newRootFS(t testing.TB, root string, src ZtocSource, opts ...Opt) *FS {
	t.Helper()
	f, err := New(root, src, remoteBlobs(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

// mountImage mounts img's layer through f on a fresh directory, as an
// unpack Prepare with CRI labels would, and returns the directory.
func mountImage(t testing.TB, f *FS, img *image) string {
	t.Helper()
	mp := mountDir(t)
	if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	return mp
}

// mountDir returns a fresh empty directory to mount on.
func mountDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A failed test may leave the mount; detach it so TempDir's
		// removal does not walk into it.
		if isMounted(t, dir) {
			_ = unmountStale(dir)
		}
	})
	return dir
}

// isMounted reports whether the mount table lists dir as a mountpoint.
func isMounted(t testing.TB, dir string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// checkTree compares the files under dir with the layer's entries.
func checkTree(t testing.TB, dir string, entries []ztoctest.File) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(dir, e.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("lstat %s: %v", e.Name, err)
			continue
		}
		if got := int64(fi.Mode().Perm()); got != e.Mode&0o777 {
			t.Errorf("%s: mode %o, want %o", e.Name, got, e.Mode&0o777)
		}
		switch e.Type {
		case tar.TypeReg:
			got, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("read %s: %v", e.Name, err)
			} else if !bytes.Equal(got, e.Body) {
				t.Errorf("%s: read %d bytes that differ from the tar's %d", e.Name, len(got), len(e.Body))
			}
		case tar.TypeSymlink:
			if got, err := os.Readlink(p); err != nil || got != e.Linkname {
				t.Errorf("readlink %s = %q, %v; want %q", e.Name, got, err, e.Linkname)
			}
		case tar.TypeDir:
			if !fi.IsDir() {
				t.Errorf("%s: not a directory", e.Name)
			}
		}
	}
}

// readFile reads name under dir, in full.
func readFile(dir, name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
