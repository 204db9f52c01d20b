package ztoc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// testFile is one regular file of a generated layer.
type testFile struct {
	name string
	data []byte
}

// makeTar writes a tar of files (random and repetitive contents), plus a
// directory, a symlink and a hardlink.
func makeTar(t testing.TB, seed uint64, n, maxSize int) ([]byte, []testFile) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	entries := []ztoctest.File{{Name: "d/", Type: tar.TypeDir, Mode: 0o755}}
	var files []testFile
	for i := range n {
		data := make([]byte, rng.IntN(maxSize+1))
		if i%2 == 0 {
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
		} else {
			for j := range data {
				data[j] = "abcabcabd\n"[j%10]
			}
		}
		f := testFile{name: fmt.Sprintf("d/f%03d", i), data: data}
		entries = append(entries, ztoctest.File{Name: f.name, Mode: 0o644, Body: data})
		files = append(files, f)
	}
	entries = append(entries,
		ztoctest.File{Name: "d/sym", Type: tar.TypeSymlink, Linkname: "f000"},
		ztoctest.File{Name: "d/hard", Type: tar.TypeLink, Linkname: "d/f000"})
	return ztoctest.Layer(t, entries, ztoctest.LayerOptions{ModTime: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}), files
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func gzipWith(t testing.TB, level int, klauspost bool, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	if klauspost {
		w, err = kgzip.NewWriterLevel(&buf, level)
	} else {
		w, err = gzip.NewWriterLevel(&buf, level)
	}
	must(t, err)
	_, err = w.Write(data)
	must(t, err)
	must(t, w.Close())
	return buf.Bytes()
}

// checkRoundTrip builds blob's zTOC, re-encodes and decodes it, and reads
// every file back through spans.
func checkRoundTrip(t *testing.T, blob []byte, spanSize int64, files []testFile) *Ztoc {
	t.Helper()
	z, err := Build(context.Background(), bytes.NewReader(blob), BuildOptions{SpanSize: spanSize})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	enc, err := Marshal(z)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	z, err = Unmarshal(enc)
	if err != nil {
		t.Fatalf("Unmarshal(Marshal(Build)): %v", err)
	}
	r := NewReader(z, NewFileFetcher(bytes.NewReader(blob)))
	for _, f := range files {
		rd, _, err := r.Open(context.Background(), f.name)
		if err != nil {
			t.Fatalf("Open(%s): %v", f.name, err)
		}
		got, err := io.ReadAll(rd)
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s: read %d bytes (err %v), want %d", f.name, len(got), err, len(f.data))
		}
	}
	return z
}

// TestBuildRoundTrip builds zTOCs for layers made by several gzip writers
// and levels (stored, fixed and dynamic blocks) and span sizes, and reads
// every file back through spans.
func TestBuildRoundTrip(t *testing.T) {
	tarball, files := makeTar(t, 1, 40, 40<<10)
	for _, level := range []int{0, 1, 6, 9} {
		for _, kp := range []bool{false, true} {
			blob := gzipWith(t, level, kp, tarball)
			for _, span := range []int64{1, 4 << 10, 100 << 10, 1 << 30} {
				t.Run(fmt.Sprintf("level%d-klauspost%v-span%d", level, kp, span), func(t *testing.T) {
					z := checkRoundTrip(t, blob, span, files)
					if span == 1<<30 && z.NumSpans() != 1 {
						t.Errorf("%d spans with a huge span size", z.NumSpans())
					}
				})
			}
		}
	}
	for _, span := range []int64{512, 5000, 1 << 20} {
		t.Run(fmt.Sprintf("tar-span%d", span), func(t *testing.T) { checkRoundTrip(t, tarball, span, files) })
	}
}

// TestBuildMultiMemberAndFlush covers concatenated members and sync-flush
// empty stored blocks, including one before any data.
func TestBuildMultiMemberAndFlush(t *testing.T) {
	tarball, files := makeTar(t, 2, 20, 30<<10)
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	must(t, w.Flush()) // an empty, non-final block at out 0
	for i := 0; i < len(tarball); i += 7000 {
		_, err := w.Write(tarball[i:min(i+7000, len(tarball))])
		must(t, err)
		must(t, w.Flush())
		if i%21000 == 0 { // start a new member now and then
			must(t, w.Close())
			w = gzip.NewWriter(&buf)
		}
	}
	must(t, w.Close())
	for _, span := range []int64{1, 10000, 1 << 20} {
		checkRoundTrip(t, buf.Bytes(), span, files)
	}
}

// TestBuildSpanGrid checks that checkpoints follow the placement rule and
// spans tile both the blob and the tar.
func TestBuildSpanGrid(t *testing.T) {
	tarball, _ := makeTar(t, 3, 30, 50<<10)
	blob := gzipWith(t, 6, false, tarball)
	const span = 64 << 10
	z, err := Build(context.Background(), bytes.NewReader(blob), BuildOptions{SpanSize: span})
	must(t, err)
	cps := z.Gzip.Checkpoints
	for i := 1; i < len(cps); i++ {
		if cps[i].Out-cps[i-1].Out <= span {
			t.Errorf("checkpoint %d only %d bytes after the previous", i, cps[i].Out-cps[i-1].Out)
		}
	}
	for i := range z.NumSpans() {
		s, err := z.Span(SpanID(i))
		must(t, err)
		if got := sha256.Sum256(blob[s.CompressedStart:s.CompressedEnd]); string(z.SpanDigests[i]) != fmt.Sprintf("sha256:%x", got) {
			t.Errorf("span %d digest does not cover [%d,%d)", i, s.CompressedStart, s.CompressedEnd)
		}
	}
	if z.CompressedArchiveSize != int64(len(blob)) || z.UncompressedArchiveSize != int64(len(tarball)) {
		t.Errorf("sizes %d/%d, want %d/%d", z.CompressedArchiveSize, z.UncompressedArchiveSize, len(blob), len(tarball))
	}
}

func TestBuildErrors(t *testing.T) {
	tarball, _ := makeTar(t, 4, 10, 20<<10)
	blob := gzipWith(t, 6, false, tarball)
	corrupt := bytes.Clone(blob)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, c := range map[string]struct {
		blob        []byte
		unindexable bool
	}{
		"empty":          {nil, true},
		"zstd":           {[]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x11, 0x00}, true},
		"text":           {bytes.Repeat([]byte("<html>not a layer</html>\n"), 40), true},
		"short text":     {[]byte("hello"), true},
		"truncated gzip": {blob[:len(blob)/2], false},
		"no trailer":     {blob[:len(blob)-4], false},
		"corrupt gzip":   {corrupt, false},
		"gzip of text":   {gzipWith(t, 6, false, bytes.Repeat([]byte("not a tar "), 100)), false},
		"truncated tar":  {tarball[:len(tarball)/2], false},
		"unsafe names":   {layerWith(t, &tar.Header{Name: "../../etc/passwd", Typeflag: tar.TypeReg}), true},
		"global header":  {layerWith(t, &tar.Header{Name: "g", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}), false},
	} {
		t.Run(name, func(t *testing.T) {
			z, err := Build(context.Background(), bytes.NewReader(c.blob), BuildOptions{SpanSize: 4096})
			if err == nil {
				t.Fatalf("Build succeeded: %d entries", len(z.TOC))
			}
			if errors.Is(err, ErrUnindexable) != c.unindexable {
				t.Fatalf("err = %v; wraps ErrUnindexable: %v, want %v", err, !c.unindexable, c.unindexable)
			}
		})
	}
	if _, err := Build(context.Background(), bytes.NewReader(blob), BuildOptions{SpanSize: -1}); err == nil {
		t.Error("negative span size accepted")
	}
}

func layerWith(t *testing.T, h *tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(h))
	must(t, tw.Close())
	return gzipWith(t, 6, false, buf.Bytes())
}

// TestBuildEmptyArchive builds a layer holding only the end-of-archive
// blocks.
func TestBuildEmptyArchive(t *testing.T) {
	z, err := Build(context.Background(), bytes.NewReader(gzipWith(t, 6, false, make([]byte, 1024))), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(z.TOC) != 0 || z.UncompressedArchiveSize != 1024 || z.NumSpans() != 1 {
		t.Fatalf("empty archive: %d entries, size %d, %d spans", len(z.TOC), z.UncompressedArchiveSize, z.NumSpans())
	}
}

// stallingReader hands out a few bytes at a time, then stalls until its
// context is cancelled, as an HTTP body does.
type stallingReader struct {
	ctx context.Context
	r   io.Reader
}

func (s *stallingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p[:min(len(p), 1000)])
	if err == io.EOF {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	return n, err
}

// TestBuildCancel checks that cancelling the context stops a build whose
// source stalls, and that no goroutine outlives Build.
func TestBuildCancel(t *testing.T) {
	tarball, _ := makeTar(t, 5, 30, 50<<10)
	blob := gzipWith(t, 6, false, tarball)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Build(ctx, &stallingReader{ctx: ctx, r: bytes.NewReader(blob[:len(blob)-100])}, BuildOptions{SpanSize: 4096})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled build: err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Build did not return after cancel")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Build, %d before", n, before)
	}
}

// TestBuildDetectsTar checks tar detection without the ustar magic (a V7
// header with a valid checksum) and for a GNU-format tar.
func TestBuildDetectsTar(t *testing.T) {
	for _, format := range []tar.Format{tar.FormatGNU, tar.FormatPAX, tar.FormatUSTAR} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		must(t, tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Size: 1, Format: format, Mode: 0o644}))
		_, err := tw.Write([]byte("x"))
		must(t, err)
		must(t, tw.Close())
		if got := detectFormat(buf.Bytes()); got != formatTar {
			t.Errorf("%v tar detected as %v", format, got)
		}
		v7 := bytes.Clone(buf.Bytes()[:512])
		copy(v7[257:265], make([]byte, 8)) // drop the magic and version
		fixChecksum(v7)
		if got := detectFormat(v7); got != formatTar {
			t.Errorf("V7 header detected as %v", got)
		}
	}
	if got := detectFormat(make([]byte, 512)); got != formatTar {
		t.Errorf("all-zero block detected as %v", got)
	}
}

func fixChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// TestBuildFixtureDefaultTool checks the default options against a fixture
// built with the same span size: the defaults are the reference's.
func TestBuildFixtureDefaultTool(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	z, err := Build(context.Background(), bytes.NewReader(f.Layer(t)), BuildOptions{SpanSize: f.Expect.SpanSize})
	must(t, err)
	if z.BuildToolIdentifier != DefaultBuildToolIdentifier || z.Version != Version {
		t.Errorf("defaults %q %q", z.BuildToolIdentifier, z.Version)
	}
	z, err = Build(context.Background(), bytes.NewReader(f.Layer(t)), BuildOptions{})
	must(t, err)
	if z.Gzip.SpanSize != DefaultSpanSize {
		t.Errorf("default span size %d", z.Gzip.SpanSize)
	}
}

// TestBuildPaddedArchive covers a tar followed by padding (GNU tar pads to
// 10 KiB records; some tools append more): block boundaries in the padding
// must not become checkpoints past the archive's end, and the last span
// still runs to the end of the blob.
func TestBuildPaddedArchive(t *testing.T) {
	tarball, files := makeTar(t, 6, 5, 3000)
	padded := append(bytes.Clone(tarball), make([]byte, 20000)...)
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	for i := 0; i < len(padded); i += 1000 {
		_, err := w.Write(padded[i:min(i+1000, len(padded))])
		must(t, err)
		must(t, w.Flush()) // a block boundary every 1000 bytes
	}
	must(t, w.Close())
	z := checkRoundTrip(t, buf.Bytes(), 4096, files)
	if z.UncompressedArchiveSize != int64(len(tarball)) {
		t.Errorf("archive size %d, want %d", z.UncompressedArchiveSize, len(tarball))
	}
	last, err := z.Span(z.MaxSpanID)
	must(t, err)
	if last.UncompressedStart > int64(len(tarball)) || last.CompressedEnd != int64(buf.Len()) {
		t.Errorf("last span %+v for a %d-byte tar in a %d-byte blob", last, len(tarball), buf.Len())
	}
	if sum := sha256.Sum256(buf.Bytes()[last.CompressedStart:]); string(last.Digest) != fmt.Sprintf("sha256:%x", sum) {
		t.Error("last span digest does not cover the padding")
	}
	// The same padded tar, uncompressed: spans cover the whole blob.
	z = checkRoundTrip(t, padded, 4096, files)
	if z.UncompressedArchiveSize != int64(len(tarball)) || z.Tar.Size != int64(len(padded)) {
		t.Errorf("plain padded tar: archive size %d, blob %d", z.UncompressedArchiveSize, z.Tar.Size)
	}
}
