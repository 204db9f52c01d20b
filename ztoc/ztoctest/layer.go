package ztoctest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"math/rand/v2"
	"testing"
	"time"
)

// PAXXattrPrefix starts the PAX record keys that carry extended attributes
// (the convention GNU tar, containerd and the zTOC use). It is repeated here
// rather than taken from package ztoc, which this package must not import.
const PAXXattrPrefix = "SCHILY.xattr."

// DefaultModTime returns the modification time of generated entries that do
// not set their own. It has a sub-second part so that tests see whether
// nanoseconds survive (PAX headers keep them).
func DefaultModTime() time.Time { return time.Date(2024, 3, 4, 5, 6, 7, 123456789, time.UTC) }

// File is one tar entry of a generated layer.
type File struct {
	// Name is the entry's path as written in the header ("etc/", "a/b.txt").
	Name string
	// Type is the tar type flag; 0 means tar.TypeReg.
	Type byte
	// Mode is written as is (permission and setuid/setgid/sticky bits).
	Mode int64
	// Body is the content of a regular file; ignored for other types, whose
	// size is written as 0.
	Body []byte
	// Linkname is the target of a symlink or hard link.
	Linkname string
	// Xattrs become PAX records PAXXattrPrefix+name.
	Xattrs map[string]string
	// ModTime overrides LayerOptions.ModTime for this entry.
	ModTime time.Time
}

// LayerOptions tunes Layer. The zero value makes an uncompressed tar with
// DefaultModTime on every entry.
type LayerOptions struct {
	// Gzip compresses the tar with gzip's default level.
	Gzip bool
	// ModTime is the time of entries that do not set one; zero means
	// DefaultModTime.
	ModTime time.Time
}

// Layer writes files, in order, as a PAX-format tar (gzip-compressed when
// opts.Gzip), failing the test on error. The same arguments always give the
// same bytes, so digests are stable across runs.
func Layer(t testing.TB, files []File, opts LayerOptions) []byte {
	t.Helper()
	mtime := opts.ModTime
	if mtime.IsZero() {
		mtime = DefaultModTime()
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		h := header(f, mtime)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("ztoctest: tar header %s: %v", f.Name, err)
		}
		if _, err := tw.Write(f.Body[:h.Size]); err != nil {
			t.Fatalf("ztoctest: tar body %s: %v", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("ztoctest: close tar: %v", err)
	}
	if !opts.Gzip {
		return raw.Bytes()
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatalf("ztoctest: gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("ztoctest: gzip: %v", err)
	}
	return gz.Bytes()
}

// header is the tar header Layer writes for f.
func header(f File, mtime time.Time) *tar.Header {
	h := &tar.Header{Name: f.Name, Typeflag: f.Type, Mode: f.Mode, Linkname: f.Linkname,
		ModTime: mtime, Format: tar.FormatPAX}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if !f.ModTime.IsZero() {
		h.ModTime = f.ModTime
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(f.Body))
	}
	for k, v := range f.Xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[PAXXattrPrefix+k] = v
	}
	return h
}

// Content returns n bytes, deterministic in seed, alternating 4 KiB of
// random bytes with 4 KiB of text, so gzip shrinks it about 2:1 as it does
// real layers and a file spans several deflate blocks.
func Content(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 99))
	const text = "lazy loading, one span at a time\n"
	b := make([]byte, n)
	for i := range b {
		if (i/4096)%2 == 0 {
			b[i] = byte(r.Uint32())
		} else {
			b[i] = text[i%len(text)]
		}
	}
	return b
}
