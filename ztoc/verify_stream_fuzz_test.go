package ztoc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// FuzzVerifyStream: any zTOC bytes against any layer bytes give a result
// without a panic or a hang, every refusal of a decodable zTOC wraps
// ErrMismatch (the reader here cannot fail), and when verification passes
// the span bytes handed out are the layer's own tar stream.
func FuzzVerifyStream(f *testing.F) {
	files := []ztoctest.File{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/a.sh", Mode: 0o755, Body: []byte("#!/bin/sh\necho SAFE\n")},
		{Name: "etc/b", Mode: 0o644, Body: ztoctest.Content(1, 9000)},
		{Name: "etc/l", Type: tar.TypeSymlink, Linkname: "a.sh"},
	}
	for _, gz := range []bool{true, false} {
		layer := ztoctest.Layer(f, files, ztoctest.LayerOptions{Gzip: gz})
		z, err := Build(context.Background(), bytes.NewReader(layer), BuildOptions{SpanSize: 4096})
		if err != nil {
			f.Fatal(err)
		}
		b, err := Marshal(z)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, layer)
	}
	f.Fuzz(func(t *testing.T, zb, layer []byte) {
		z, err := Unmarshal(zb)
		if err != nil {
			return
		}
		var got bytes.Buffer
		err = VerifyStream(context.Background(), bytes.NewReader(layer), z, func(_ SpanID, b []byte) error {
			got.Write(b)
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("refusal %v does not wrap ErrMismatch", err)
			}
			return
		}
		want := layer
		if z.Gzip != nil {
			zr, err := gzip.NewReader(bytes.NewReader(layer))
			if err != nil {
				t.Fatalf("verified a gzip zTOC against a layer gzip refuses: %v", err)
			}
			if want, err = io.ReadAll(zr); err != nil {
				t.Fatalf("verified a gzip zTOC against a layer gzip refuses: %v", err)
			}
		}
		if got.Len() > len(want) || !bytes.Equal(got.Bytes(), want[:got.Len()]) {
			t.Fatalf("verified spans (%d bytes) are not the layer's tar stream (%d bytes)", got.Len(), len(want))
		}
	})
}
