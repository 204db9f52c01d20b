package harness

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer is one built layer blob.
type Layer struct {
	// Blob is the compressed layer as the registry holds it.
	Blob []byte
	// DiffID is the digest of the uncompressed tar.
	DiffID digest.Digest
	// MediaType is the layer media type.
	MediaType string
}

// Digest returns the digest of the blob.
func (l Layer) Digest() digest.Digest { return digest.FromBytes(l.Blob) }

// modTime is the fixed mtime of every generated entry, so layers are
// reproducible byte for byte.
var modTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// busyboxApplets are the commands linked to busybox in the base layer.
var busyboxApplets = []string{
	"sh", "cat", "ls", "echo", "head", "tail", "wc", "sha256sum", "md5sum",
	"sleep", "true", "false", "find", "du", "stat", "mount", "grep", "test",
}

// layerWriter writes a tar stream into gzip and hashes the tar (diffID).
type layerWriter struct {
	buf  bytes.Buffer
	gz   *gzip.Writer
	diff hash.Hash
	tw   *tar.Writer
}

func newLayerWriter() *layerWriter {
	w := &layerWriter{diff: sha256.New()}
	w.gz = gzip.NewWriter(&w.buf)
	w.tw = tar.NewWriter(io.MultiWriter(w.gz, w.diff))
	return w
}

func (w *layerWriter) dir(name string) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: modTime, Format: tar.FormatPAX})
}

func (w *layerWriter) symlink(name, target string) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: modTime, Format: tar.FormatPAX})
}

// file writes a regular file of size bytes read from r.
func (w *layerWriter) file(name string, mode int64, size int64, r io.Reader) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: modTime, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := io.CopyN(w.tw, r, size)
	return err
}

func (w *layerWriter) close() (Layer, error) {
	if err := w.tw.Close(); err != nil {
		return Layer{}, err
	}
	if err := w.gz.Close(); err != nil {
		return Layer{}, err
	}
	return Layer{
		Blob:      w.buf.Bytes(),
		DiffID:    digest.NewDigestFromBytes(digest.SHA256, w.diff.Sum(nil)),
		MediaType: ocispec.MediaTypeImageLayerGzip,
	}, nil
}

// BusyboxLayer builds a base layer: busybox (statically linked, from
// busyboxPath) with links for a shell and common utilities, a minimal
// /etc/passwd and /etc/group, and the empty directories a container needs.
func BusyboxLayer(busyboxPath string) (Layer, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return Layer{}, fmt.Errorf("busybox layer: %w", err)
	}
	w := newLayerWriter()
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "var"} {
		if err := w.dir(d); err != nil {
			return Layer{}, err
		}
	}
	if err := w.file("bin/busybox", 0o755, int64(len(bin)), bytes.NewReader(bin)); err != nil {
		return Layer{}, err
	}
	for _, a := range busyboxApplets {
		if err := w.symlink("bin/"+a, "busybox"); err != nil {
			return Layer{}, err
		}
	}
	for name, body := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		if err := w.file(name, 0o644, int64(len(body)), bytes.NewReader([]byte(body))); err != nil {
			return Layer{}, err
		}
	}
	return w.close()
}

// DataParams describes a generated data layer. Equal params give the same
// blob byte for byte.
type DataParams struct {
	// Seed seeds the generator.
	Seed uint64
	// RandomBytes is the total size of incompressible files, written as
	// files of at most 8 MiB under data/random/.
	RandomBytes int64
	// TextBytes is the total size of compressible (text) files, written as
	// files of at most 8 MiB under data/text/.
	TextBytes int64
	// SmallFiles is the number of small files (1-4 KiB) under data/small/.
	SmallFiles int

	// The fields below shape the layer further; zero keeps the shape above
	// (and, omitted from the cache key, the cached layers of earlier runs).

	// RandomFileBytes and TextFileBytes are the sizes of each random and
	// text file; 0: 8 MiB.
	RandomFileBytes, TextFileBytes int64 `json:",omitempty"`
	// SmallPerDir is the number of small files per data/small/dNNN
	// directory; 0: 100.
	SmallPerDir int `json:",omitempty"`
	// SmallMin and SmallMax bound the small files' sizes; 0: 1 and 4 KiB.
	SmallMin, SmallMax int `json:",omitempty"`
	// SmallRandom fills the small files with random (incompressible)
	// bytes instead of text.
	SmallRandom bool `json:",omitempty"`
}

// HelloPath is the file every data layer ends with; HelloContent is its
// content. Tests print it: it is the last entry, so a lazy read of it
// proves the rest of the layer was not fetched first.
const (
	HelloPath    = "data/hello.txt"
	HelloContent = "hello from the ociseek data layer\n"
)

// key names a cache file for p.
func (p DataParams) key() string {
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return "data-" + hex.EncodeToString(sum[:8])
}

// DataLayer builds the data layer described by p, or reads it from
// cacheDir when an earlier run built it (empty cacheDir: no cache).
func DataLayer(p DataParams, cacheDir string) (Layer, error) {
	var cache string
	if cacheDir != "" {
		cache = filepath.Join(cacheDir, p.key())
		if l, err := readCachedLayer(cache); err == nil {
			return l, nil
		}
	}
	l, err := buildDataLayer(p)
	if err != nil {
		return Layer{}, fmt.Errorf("data layer: %w", err)
	}
	if cache != "" {
		if err := writeCachedLayer(cache, l); err != nil {
			return Layer{}, err
		}
	}
	return l, nil
}

func buildDataLayer(p DataParams) (Layer, error) {
	var seed [32]byte
	for i := range 8 {
		seed[i] = byte(p.Seed >> (8 * i))
	}
	rng := rand.NewChaCha8(seed)
	w := newLayerWriter()
	for _, d := range []string{"data", "data/random", "data/text", "data/small"} {
		if err := w.dir(d); err != nil {
			return Layer{}, err
		}
	}
	for i, left := 0, p.RandomBytes; left > 0; i++ {
		n := min(left, orDefault(p.RandomFileBytes, 8<<20))
		if err := w.file(fmt.Sprintf("data/random/blob-%03d", i), 0o644, n, rng); err != nil {
			return Layer{}, err
		}
		left -= n
	}
	text := &textReader{rng: rand.New(rand.NewPCG(p.Seed, 1))}
	for i, left := 0, p.TextBytes; left > 0; i++ {
		n := min(left, orDefault(p.TextFileBytes, 8<<20))
		if err := w.file(fmt.Sprintf("data/text/doc-%03d.txt", i), 0o644, n, text); err != nil {
			return Layer{}, err
		}
		left -= n
	}
	if err := writeSmallFiles(w, p, text, rng); err != nil {
		return Layer{}, err
	}
	if err := w.file(HelloPath, 0o644, int64(len(HelloContent)), bytes.NewReader([]byte(HelloContent))); err != nil {
		return Layer{}, err
	}
	return w.close()
}

// orDefault returns n, or def when n is not positive.
func orDefault(n, def int64) int64 {
	if n > 0 {
		return n
	}
	return def
}

// writeSmallFiles writes p.SmallFiles small files, p.SmallPerDir to a
// directory, of text or (p.SmallRandom) of bytes from rng.
func writeSmallFiles(w *layerWriter, p DataParams, text *textReader, rng io.Reader) error {
	perDir, lo, hi := p.SmallPerDir, p.SmallMin, p.SmallMax
	if perDir <= 0 {
		perDir = 100
	}
	if lo <= 0 || hi < lo {
		lo, hi = 1024, 4*1024
	}
	var content io.Reader = text
	if p.SmallRandom {
		content = rng
	}
	for i := range p.SmallFiles {
		if i%perDir == 0 {
			if err := w.dir(fmt.Sprintf("data/small/d%03d", i/perDir)); err != nil {
				return err
			}
		}
		size := int64(lo + text.rng.IntN(hi-lo))
		if err := w.file(fmt.Sprintf("data/small/d%03d/f%05d", i/perDir, i), 0o644, size, content); err != nil {
			return err
		}
	}
	return nil
}

// textReader yields an endless, compressible stream of words.
type textReader struct {
	rng  *rand.Rand
	line []byte
}

var words = []string{"seekable", "layer", "span", "registry", "container", "lazy", "fetch",
	"index", "gzip", "checkpoint", "snapshot", "overlay", "mount", "digest", "manifest", "tar"}

func (r *textReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.line) == 0 {
			for range 12 {
				r.line = append(r.line, words[r.rng.IntN(len(words))]...)
				r.line = append(r.line, ' ')
			}
			r.line[len(r.line)-1] = '\n'
		}
		c := copy(p[n:], r.line)
		r.line = r.line[c:]
		n += c
	}
	return n, nil
}

func readCachedLayer(path string) (Layer, error) {
	blob, err := os.ReadFile(path + ".tar.gz")
	if err != nil {
		return Layer{}, err
	}
	diff, err := os.ReadFile(path + ".diffid")
	if err != nil {
		return Layer{}, err
	}
	d, err := digest.Parse(string(diff))
	if err != nil {
		return Layer{}, err
	}
	return Layer{Blob: blob, DiffID: d, MediaType: ocispec.MediaTypeImageLayerGzip}, nil
}

// writeCachedLayer writes the blob then its diffID, each by temp + rename,
// so a half-written cache entry is never read (the diffID file is the
// commit mark).
func writeCachedLayer(path string, l Layer) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("layer cache: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{path + ".tar.gz", l.Blob}, {path + ".diffid", []byte(l.DiffID.String())}} {
		tmp := f.name + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return fmt.Errorf("layer cache: %w", err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			return fmt.Errorf("layer cache: %w", err)
		}
	}
	return nil
}
