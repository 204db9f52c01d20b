package span

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/fs/cache"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/ztoc"
)

// testFile is one regular file of a generated layer.
type testFile struct {
	name string
	data []byte
}

// fileContent makes n bytes, half random and half text-like, so that gzip
// compresses it about 2:1 like real layers.
func fileContent(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 256+int(r.IntN(4096)))
		if r.IntN(2) == 0 {
			for j := range run {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			for j := range run {
				b[i+j] = "the quick brown fox jumps over a lazy dog\n"[(i+j)%42]
			}
		}
		i += run
	}
	return b
}

// makeLayer writes a gzip tar of files.
func makeLayer(t testing.TB, files []testFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// smallFiles makes n files of size bytes each, named after size.
func smallFiles(n, size int) []testFile {
	files := make([]testFile, n)
	for i := range files {
		files[i] = testFile{name: fmt.Sprintf("dir%d/file%d-%05d", i%10, size, i), data: fileContent(uint64(i*size), size)}
	}
	return files
}

// countingBlob counts the bytes read through it (what crossed the network
// into the manager).
type countingBlob struct {
	BlobReader
	bytes    atomic.Int64
	requests atomic.Int64
}

func (c *countingBlob) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	c.requests.Add(1)
	rc, err := c.BlobReader.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	return &countingBody{ReadCloser: rc, n: &c.bytes}, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// env is a layer served by a real registry, with its zTOC and a cache.
type env struct {
	reg    blobRegistry
	layer  []byte
	dgst   digest.Digest
	z      *ztoc.Ztoc
	files  []testFile
	blob   *countingBlob
	remote *remote.Blob
	cache  *cache.Cache
}

// fastRemote keeps registry-outage tests short.
var fastRemote = remote.Options{PlainHTTP: true, MaxRetries: 2, MinBackoff: 10 * time.Millisecond,
	MaxBackoff: 100 * time.Millisecond, RequestTimeout: 5 * time.Second}

// benchClient is the client the daemon should use: remote.NewTransport
// keeps a connection per parallel span fetch.
var benchClient = &http.Client{Transport: remote.NewTransport()}

// newEnv builds the layer's zTOC, pushes the layer (or served, when not
// nil, in its place: a tampered blob) and opens it.
func newEnv(t testing.TB, reg blobRegistry, files []testFile, spanSize int64, served []byte) *env {
	t.Helper()
	e := &env{reg: reg, files: files, layer: makeLayer(t, files)}
	e.dgst = digest.FromBytes(e.layer)
	z, err := ztoc.Build(context.Background(), bytes.NewReader(e.layer), ztoc.BuildOptions{SpanSize: spanSize})
	if err != nil {
		t.Fatalf("build ztoc: %v", err)
	}
	e.z = z
	if served == nil {
		served = e.layer
	}
	desc := reg.PushBlob(t, "span/test", served, "application/vnd.oci.image.layer.v1.tar+gzip")
	e.remote, err = remote.Open(context.Background(), benchClient, reg.Ref("span/test", ""), desc.Digest, fastRemote)
	if err != nil {
		t.Fatalf("open blob: %v", err)
	}
	e.blob = &countingBlob{BlobReader: e.remote}
	e.cache, err = cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) manager(t testing.TB, opts Options) *Manager {
	t.Helper()
	if opts.LayerDigest == "" {
		opts.LayerDigest = e.dgst
	}
	m, err := New(e.z, e.blob, e.cache, opts)
	if err != nil {
		t.Fatalf("span.New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// entry returns the TOC entry of a file.
func (e *env) entry(t testing.TB, name string) *ztoc.FileMetadata {
	t.Helper()
	for i := range e.z.TOC {
		if e.z.TOC[i].Name == name {
			return &e.z.TOC[i]
		}
	}
	t.Fatalf("%s not in TOC", name)
	return nil
}

// readFile reads a whole file through m with reads of chunk bytes.
func readFile(ctx context.Context, m *Manager, ent *ztoc.FileMetadata, chunk int) ([]byte, error) {
	out := make([]byte, ent.UncompressedSize)
	for off := 0; off < len(out); off += chunk {
		end := min(off+chunk, len(out))
		if _, err := m.ReadAt(ctx, out[off:end], ent.UncompressedOffset+int64(off)); err != nil {
			return nil, err
		}
	}
	return out, nil
}
