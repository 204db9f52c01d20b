package ztoc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// collectSpans returns an onSpan that appends each span's bytes to *all,
// failing the test when spans come out of order or with the wrong length.
func collectSpans(t *testing.T, z *Ztoc, all *bytes.Buffer) func(SpanID, []byte) error {
	next := SpanID(0)
	return func(id SpanID, b []byte) error {
		if id != next {
			t.Errorf("onSpan(%d), want span %d", id, next)
		}
		next++
		s, err := z.Span(id)
		if err != nil {
			return err
		}
		if int64(len(b)) != s.UncompressedSize() {
			t.Errorf("span %d: %d bytes, want %d", id, len(b), s.UncompressedSize())
		}
		all.Write(b)
		return nil
	}
}

// decompressed returns the layer's tar bytes (the layer itself when it is
// not gzip), as `gzip -dc` would print them.
func decompressed(t *testing.T, layer []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		return layer
	}
	out, err := io.ReadAll(zr)
	must(t, err)
	return out
}

// TestVerifyStreamFixtures verifies the reference zTOC of every fixture
// against its layer, and checks that the span bytes handed to onSpan are the
// layer's tar stream, in order (the zero padding after the last span aside).
func TestVerifyStreamFixtures(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, err := Unmarshal(f.Ztoc(t))
			must(t, err)
			layer := f.Layer(t)
			var all bytes.Buffer
			if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, collectSpans(t, z, &all)); err != nil {
				t.Fatalf("VerifyStream(reference ztoc) = %v", err)
			}
			want := decompressed(t, layer)
			if all.Len() > len(want) || !bytes.Equal(all.Bytes(), want[:all.Len()]) {
				t.Fatalf("spans gave %d bytes that are not the first bytes of the %d-byte tar stream", all.Len(), len(want))
			}
			if int64(all.Len()) < z.UncompressedArchiveSize || !isZeroBlock(want[all.Len():]) {
				t.Errorf("spans end at %d of %d tar bytes (archive size %d); the rest is not zero padding",
					all.Len(), len(want), z.UncompressedArchiveSize)
			}
			// Without onSpan too.
			if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, nil); err != nil {
				t.Fatalf("VerifyStream(nil onSpan) = %v", err)
			}
		})
	}
}

// scriptLayer makes a gzip layer of 60 small shell scripts that say SAFE,
// with incompressible filler between them so the deflate stream has many
// blocks, a symlink and a hardlink; tail is appended after the tar's
// end-of-archive blocks before compression.
func scriptLayer(t testing.TB, tail []byte) []byte {
	t.Helper()
	entries := []ztoctest.File{{Name: "bin/", Type: tar.TypeDir, Mode: 0o755}}
	for i := range 60 {
		body := fmt.Appendf(nil, "#!/bin/sh\n# script %d\necho SAFE\nexit 0 # SAFE\n", i)
		entries = append(entries,
			ztoctest.File{Name: fmt.Sprintf("bin/s%02d.sh", i), Mode: 0o755, Body: body},
			ztoctest.File{Name: fmt.Sprintf("bin/f%02d.dat", i), Mode: 0o644, Body: ztoctest.Content(uint64(i), 3000)})
	}
	entries = append(entries,
		ztoctest.File{Name: "bin/sym", Type: tar.TypeSymlink, Linkname: "s00.sh"},
		ztoctest.File{Name: "bin/hard", Type: tar.TypeLink, Linkname: "bin/s01.sh"})
	raw := ztoctest.Layer(t, entries, ztoctest.LayerOptions{})
	return gzipWith(t, gzip.DefaultCompression, false, append(raw, tail...))
}

// buildRoundTrip builds the zTOC of layer and returns it after a Marshal /
// Unmarshal round trip, as a reader would get it.
func buildRoundTrip(t testing.TB, layer []byte, spanSize int64) *Ztoc {
	t.Helper()
	z, err := Build(context.Background(), bytes.NewReader(layer), BuildOptions{SpanSize: spanSize})
	must(t, err)
	return roundTrip(t, z)
}

func roundTrip(t testing.TB, z *Ztoc) *Ztoc {
	t.Helper()
	b, err := Marshal(z)
	must(t, err)
	z, err = Unmarshal(b)
	must(t, err)
	return z
}

// TestVerifyStreamEvilWindows forges the windows of an honest zTOC (SAFE
// becomes EVIL) as an attacker would; the zTOC still decodes and validates,
// but verification refuses it and names a checkpoint's window.
func TestVerifyStreamEvilWindows(t *testing.T) {
	layer := scriptLayer(t, nil)
	z := buildRoundTrip(t, layer, 8<<10)
	if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, nil); err != nil {
		t.Fatalf("honest ztoc: %v", err)
	}
	changed := 0
	for i := range z.Gzip.Checkpoints {
		w := z.Gzip.Checkpoints[i].Window
		if bytes.Contains(w, []byte("SAFE")) {
			copy(w, bytes.ReplaceAll(w, []byte("SAFE"), []byte("EVIL")))
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("no checkpoint window holds SAFE; the test layer does not exercise windows")
	}
	evil := roundTrip(t, z)
	if err := evil.Validate(); err != nil {
		t.Fatalf("the forged ztoc should pass Validate (that is the point), got %v", err)
	}
	err := VerifyStream(context.Background(), bytes.NewReader(layer), evil, nil)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "window differs") {
		t.Fatalf("VerifyStream(evil windows) = %v, want a window mismatch", err)
	}
}

// TestVerifyStreamForgedFields changes one thing at a time in an honest
// zTOC and checks each is caught and named.
func TestVerifyStreamForgedFields(t *testing.T) {
	layer := scriptLayer(t, nil)
	honest := buildRoundTrip(t, layer, 8<<10)
	if len(honest.Gzip.Checkpoints) < 4 {
		t.Fatalf("only %d checkpoints; the test needs 4", len(honest.Gzip.Checkpoints))
	}
	entry := func(z *Ztoc, name string) *FileMetadata {
		for i := range z.TOC {
			if z.TOC[i].Name == name {
				return &z.TOC[i]
			}
		}
		t.Fatalf("no entry %s", name)
		return nil
	}
	for name, c := range map[string]struct {
		forge func(z *Ztoc)
		msg   string
	}{
		"out":          {func(z *Ztoc) { z.Gzip.Checkpoints[2].Out++ }, "checkpoint 2"},
		"bits":         {func(z *Ztoc) { cp := &z.Gzip.Checkpoints[2]; cp.Bits = (cp.Bits + 1) % 8 }, ""},
		"in":           {func(z *Ztoc) { z.Gzip.Checkpoints[2].In++ }, ""},
		"window byte":  {func(z *Ztoc) { z.Gzip.Checkpoints[3].Window[WindowSize-1] ^= 1 }, "checkpoint 3 at in"},
		"last dropped": {func(z *Ztoc) { z.TOC = z.TOC[:len(z.TOC)-1] }, "after the ztoc's last entry"},
		"extra entry": {func(z *Ztoc) {
			// A directory whose header would sit in the first
			// end-of-archive block: Validate cannot tell.
			e := z.TOC[len(z.TOC)-1]
			e.Name, e.Type, e.Linkname, e.UncompressedSize = "bin/extra/", TypeDir, "", 0
			e.UncompressedOffset = alignBlock(e.UncompressedOffset+e.UncompressedSize) + tarBlockSize
			z.TOC = append(z.TOC, e)
		}, "ends after"},
		"reordered":      {func(z *Ztoc) { z.TOC[3], z.TOC[4] = z.TOC[4], z.TOC[3] }, ""},
		"mode":           {func(z *Ztoc) { entry(z, "bin/s05.sh").Mode = 0o4755 }, "mode"},
		"uid":            {func(z *Ztoc) { entry(z, "bin/s05.sh").UID = 1000 }, "uid"},
		"linkname":       {func(z *Ztoc) { entry(z, "bin/sym").Linkname = "/etc/shadow" }, "link name"},
		"pax record":     {func(z *Ztoc) { entry(z, "bin/s05.sh").PAXRecords = map[string]string{"SCHILY.xattr.user.x": "1"} }, "pax records"},
		"mod time":       {func(z *Ztoc) { e := entry(z, "bin/s05.sh"); e.ModTime = e.ModTime.Add(1) }, "mod time"},
		"span digest":    {func(z *Ztoc) { z.SpanDigests[1] = digest.FromString("other") }, "span 1"},
		"last digest":    {func(z *Ztoc) { z.SpanDigests[z.MaxSpanID] = digest.FromString("other") }, "digest"},
		"compressed":     {func(z *Ztoc) { z.CompressedArchiveSize++ }, "compressed archive size"},
		"uncompressed":   {func(z *Ztoc) { z.UncompressedArchiveSize += 512 }, ""},
		"no checkpoints": {func(z *Ztoc) { z.Gzip.Checkpoints = nil }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			z := roundTrip(t, honest)
			c.forge(z)
			err := VerifyStream(context.Background(), bytes.NewReader(layer), z, func(SpanID, []byte) error { return nil })
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("VerifyStream = %v, want ErrMismatch mentioning %q", err, c.msg)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

// TestVerifyStreamPadding accepts zero padding after the end-of-archive
// blocks and refuses anything else there, even in a zTOC the builder made.
func TestVerifyStreamPadding(t *testing.T) {
	padded := scriptLayer(t, make([]byte, 10240))
	if err := VerifyStream(context.Background(), bytes.NewReader(padded), buildRoundTrip(t, padded, 8<<10), nil); err != nil {
		t.Fatalf("zero padding: %v", err)
	}
	garbage := scriptLayer(t, []byte("#!/bin/sh\necho EVIL\n"))
	err := VerifyStream(context.Background(), bytes.NewReader(garbage), buildRoundTrip(t, garbage, 8<<10), nil)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "after the end of the archive") {
		t.Fatalf("garbage after the archive: %v, want a mismatch", err)
	}
}

// TestVerifyStreamLayerErrors checks a short or altered blob, and that
// reader, context and onSpan errors come back as themselves, not as a
// mismatch.
func TestVerifyStreamLayerErrors(t *testing.T) {
	layer := scriptLayer(t, nil)
	z := buildRoundTrip(t, layer, 8<<10)
	ctx := context.Background()
	for name, blob := range map[string][]byte{
		"truncated": layer[:len(layer)-10],
		"longer":    append(bytes.Clone(layer), 0),
		"flipped":   func() []byte { b := bytes.Clone(layer); b[len(b)/2] ^= 0x40; return b }(),
		"other":     scriptLayer(t, []byte{0}),
	} {
		if err := VerifyStream(ctx, bytes.NewReader(blob), z, nil); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s layer: %v, want ErrMismatch", name, err)
		}
	}
	boom := errors.New("disk on fire")
	err := VerifyStream(ctx, io.MultiReader(bytes.NewReader(layer[:5000]), iotestErr{boom}), z, nil)
	if !errors.Is(err, boom) || errors.Is(err, ErrMismatch) {
		t.Errorf("reader error: %v, want the reader's error only", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := VerifyStream(cctx, bytes.NewReader(layer), z, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrMismatch) {
		t.Errorf("cancelled: %v, want context.Canceled only", err)
	}
	stop := errors.New("enough")
	err = VerifyStream(ctx, bytes.NewReader(layer), z, func(id SpanID, _ []byte) error {
		if id == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || errors.Is(err, ErrMismatch) {
		t.Errorf("onSpan error: %v, want it returned", err)
	}
	if err := VerifyStream(ctx, bytes.NewReader(layer), nil, nil); !errors.Is(err, ErrMismatch) {
		t.Errorf("nil ztoc: %v", err)
	}
}

// iotestErr is a reader that fails.
type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// TestVerifyStreamTar checks an uncompressed layer: spans are raw pieces.
func TestVerifyStreamTar(t *testing.T) {
	raw, _ := makeTar(t, 7, 20, 20000)
	z := buildRoundTrip(t, raw, 16<<10)
	var all bytes.Buffer
	if err := VerifyStream(context.Background(), bytes.NewReader(raw), z, collectSpans(t, z, &all)); err != nil {
		t.Fatalf("honest tar ztoc: %v", err)
	}
	if !bytes.Equal(all.Bytes(), raw) {
		t.Errorf("spans gave %d bytes, want the %d-byte layer", all.Len(), len(raw))
	}
	forged := roundTrip(t, z)
	forged.TOC[2].UID = 7
	if err := VerifyStream(context.Background(), bytes.NewReader(raw), forged, nil); !errors.Is(err, ErrMismatch) {
		t.Errorf("forged uid: %v, want ErrMismatch", err)
	}
	forged = roundTrip(t, z)
	forged.SpanDigests[0] = digest.FromString("x")
	if err := VerifyStream(context.Background(), bytes.NewReader(raw), forged, nil); !errors.Is(err, ErrSpanDigest) {
		t.Errorf("forged digest: %v, want ErrSpanDigest", err)
	}
}

// TestVerifyStreamFewerCheckpoints drops a checkpoint from an honest zTOC
// and merges the two spans around it: the zTOC chooses where its
// checkpoints are, so the stream's extra block boundaries are no mismatch.
func TestVerifyStreamFewerCheckpoints(t *testing.T) {
	layer := scriptLayer(t, nil)
	z := buildRoundTrip(t, layer, 8<<10)
	const k = 2
	before, err := z.Span(k - 1)
	must(t, err)
	after, err := z.Span(k)
	must(t, err)
	z.Gzip.Checkpoints = append(z.Gzip.Checkpoints[:k], z.Gzip.Checkpoints[k+1:]...)
	z.SpanDigests = append(z.SpanDigests[:k], z.SpanDigests[k+1:]...)
	z.SpanDigests[k-1] = digest.FromBytes(layer[before.CompressedStart:after.CompressedEnd])
	z.MaxSpanID--
	z = roundTrip(t, z)
	var all bytes.Buffer
	if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, collectSpans(t, z, &all)); err != nil {
		t.Fatalf("VerifyStream with merged spans: %v", err)
	}
	if want := decompressed(t, layer); !bytes.Equal(all.Bytes(), want[:z.UncompressedArchiveSize]) {
		t.Errorf("merged spans gave %d bytes that are not the tar stream", all.Len())
	}
}

// TestVerifyStreamMemory checks that verifying a 32 MiB layer without
// onSpan allocates a few MiB in all, not memory in proportion to the layer.
func TestVerifyStreamMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a 32 MiB layer")
	}
	var files []ztoctest.File
	for i := range 128 {
		files = append(files, ztoctest.File{Name: fmt.Sprintf("d/f%03d", i), Mode: 0o644, Body: ztoctest.Content(uint64(i), 256<<10)})
	}
	layer := ztoctest.Layer(t, files, ztoctest.LayerOptions{Gzip: true})
	z := buildRoundTrip(t, layer, 0)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	if err := VerifyStream(context.Background(), bytes.NewReader(layer), z, nil); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&ms)
	got := ms.TotalAlloc - before
	t.Logf("VerifyStream allocated %d bytes in all for a %d-byte layer", got, len(layer))
	if got > 4<<20 {
		t.Errorf("VerifyStream allocated %d bytes for a %d-byte layer, want under 4 MiB", got, len(layer))
	}
}
