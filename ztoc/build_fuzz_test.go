package ztoc

import (
	"archive/tar"
	"bytes"
	"context"
	"testing"
	"time"
)

// FuzzBuild feeds arbitrary layer blobs to Build: it must return (no panic,
// no hang), and whatever it accepts must encode, decode and read back
// through its spans.
func FuzzBuild(f *testing.F) {
	tarball, _ := makeTar(f, 9, 3, 3000)
	f.Add(tarball)
	f.Add(gzipWith(f, 6, false, tarball))
	f.Add(gzipWith(f, 0, false, tarball))
	f.Add(gzipWith(f, 1, true, tarball))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0})
	f.Fuzz(func(t *testing.T, blob []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		z, err := Build(ctx, bytes.NewReader(blob), BuildOptions{SpanSize: 1024})
		if err != nil {
			return
		}
		enc, err := Marshal(z)
		if err != nil {
			t.Fatalf("Marshal of a built zTOC: %v", err)
		}
		if _, err := Unmarshal(enc); err != nil {
			t.Fatalf("Unmarshal of a built zTOC: %v", err)
		}
		fetch := NewFileFetcher(bytes.NewReader(blob))
		for i := range z.NumSpans() {
			if _, err := z.ReadSpan(ctx, fetch, SpanID(i)); err != nil {
				t.Fatalf("span %d of a built zTOC: %v", i, err)
			}
		}
	})
}

// FuzzVerifyHeader parses arbitrary header regions against a fixed entry:
// no panic, and only the genuine header passes.
func FuzzVerifyHeader(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC)
	h := &tar.Header{Name: "dir/file", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 0, ModTime: mt,
		PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b"}}
	if err := tw.WriteHeader(h); err != nil {
		f.Fatal(err)
	}
	genuine := bytes.Clone(buf.Bytes())
	entry, err := entryFromHeader(h, int64(len(genuine)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(genuine)
	f.Add(genuine[:512])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, hdr []byte) {
		// Tar headers take whole blocks, so an accepted region does too.
		if err := VerifyHeader(&entry, hdr); err == nil && len(hdr)%512 != 0 {
			t.Fatalf("accepted a %d-byte header region", len(hdr))
		}
	})
}
