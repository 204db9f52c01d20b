package ztoctest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"
	"time"
)

// TestLayer reads a generated layer back with archive/tar and checks every
// field a test relies on, in both compressions.
func TestLayer(t *testing.T) {
	own := time.Unix(1700000000, 5)
	files := []File{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/a.txt", Mode: 0o640, Body: []byte("hello"), Xattrs: map[string]string{"user.k": "v"}},
		{Name: "link", Type: tar.TypeSymlink, Mode: 0o777, Linkname: "etc/a.txt", Body: []byte("ignored")},
		{Name: "old", Mode: 0o600, Body: Content(1, 10000), ModTime: own},
	}
	for _, gz := range []bool{false, true} {
		b := Layer(t, files, LayerOptions{Gzip: gz})
		if !bytes.Equal(b, Layer(t, files, LayerOptions{Gzip: gz})) {
			t.Errorf("gzip=%v: two calls gave different bytes", gz)
		}
		var r io.Reader = bytes.NewReader(b)
		if gz {
			zr, err := gzip.NewReader(r)
			if err != nil {
				t.Fatalf("gzip=true: not gzip: %v", err)
			}
			r = zr
		}
		tr := tar.NewReader(r)
		for i, want := range files {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("gzip=%v: entry %d: %v", gz, i, err)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("gzip=%v: read %s: %v", gz, want.Name, err)
			}
			wantType, wantBody, wantTime := want.Type, want.Body, DefaultModTime()
			if wantType == 0 {
				wantType = tar.TypeReg
			} else {
				wantBody = nil
			}
			if !want.ModTime.IsZero() {
				wantTime = want.ModTime
			}
			if h.Name != want.Name || h.Typeflag != wantType || h.Mode != want.Mode || h.Linkname != want.Linkname ||
				!bytes.Equal(body, wantBody) || !h.ModTime.Equal(wantTime) {
				t.Errorf("gzip=%v: entry %d = %+v (%d bytes), want %+v", gz, i, h, len(body), want)
			}
			for k, v := range want.Xattrs {
				if got := h.PAXRecords[PAXXattrPrefix+k]; got != v {
					t.Errorf("gzip=%v: %s xattr %s = %q, want %q", gz, want.Name, k, got, v)
				}
			}
		}
		if _, err := tr.Next(); !errors.Is(err, io.EOF) {
			t.Errorf("gzip=%v: after the last entry: %v, want EOF", gz, err)
		}
	}
}

// TestContent checks Content is deterministic in its seed and compresses
// about as real layers do.
func TestContent(t *testing.T) {
	a, b := Content(3, 1<<16), Content(3, 1<<16)
	if !bytes.Equal(a, b) || bytes.Equal(a, Content(4, 1<<16)) {
		t.Fatal("Content is not a function of its seed")
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(a)
	_ = zw.Close()
	if ratio := float64(len(a)) / float64(gz.Len()); ratio < 1.5 || ratio > 3 {
		t.Errorf("compression ratio %.2f, want about 2", ratio)
	}
}
