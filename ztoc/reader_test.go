package ztoc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// countingFetcher is a FileFetcher that counts the spans fetched.
type countingFetcher struct {
	*FileFetcher
	fetches int
}

func (c *countingFetcher) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	c.fetches++
	return c.FileFetcher.FetchRange(ctx, start, end)
}

func openFixture(t *testing.T, f ztoctest.Fixture) (*Ztoc, *os.File) {
	t.Helper()
	z, err := Unmarshal(f.Ztoc(t))
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(f.LayerPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	return z, fh
}

// TestReaderFixtureFiles reads every regular file of every fixture through
// its spans, with the reference zTOC, and compares the bytes' sha256.
func TestReaderFixtureFiles(t *testing.T) {
	ctx := context.Background()
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, fh := openFixture(t, f)
			r := NewReader(z, NewFileFetcher(fh))
			for i, e := range f.Expect.TOC {
				if e.ContentSHA256 == "" {
					continue
				}
				m := &z.TOC[i]
				buf := make([]byte, m.UncompressedSize)
				if n, err := r.ReadAt(ctx, buf, m.UncompressedOffset); err != nil || n != len(buf) {
					t.Fatalf("%s: ReadAt = %d, %v", m.Name, n, err)
				}
				if sum := sha256.Sum256(buf); hex.EncodeToString(sum[:]) != e.ContentSHA256 {
					t.Errorf("%s: content sha256 %x, want %s", m.Name, sum, e.ContentSHA256)
				}
			}
		})
	}
}

// TestReaderVerifyHeaders re-reads every entry's header region and checks
// it against the entry, as the FUSE layer does before trusting a file.
func TestReaderVerifyHeaders(t *testing.T) {
	ctx := context.Background()
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, fh := openFixture(t, f)
			r := NewReader(z, NewFileFetcher(fh))
			offs, err := z.HeaderOffsets()
			if err != nil {
				t.Fatal(err)
			}
			for i := range z.TOC {
				m := &z.TOC[i]
				hdr := make([]byte, m.UncompressedOffset-offs[i])
				if _, err := r.ReadAt(ctx, hdr, offs[i]); err != nil {
					t.Fatal(err)
				}
				if err := VerifyHeader(m, hdr); err != nil {
					t.Errorf("entry %d: %v", i, err)
				}
				// The neighbour's header must not pass for this entry.
				other := &z.TOC[(i+1)%len(z.TOC)]
				if other.Name != m.Name {
					if err := VerifyHeader(other, hdr); !errors.Is(err, ErrHeaderMismatch) {
						t.Errorf("entry %d's header accepted for %q: %v", i, other.Name, err)
					}
				}
			}
		})
	}
}

func TestVerifyHeaderMismatch(t *testing.T) {
	f := ztoctest.Lookup(t, "plain.tar")
	z, _ := openFixture(t, f)
	blob := f.Layer(t)
	offs, err := z.HeaderOffsets()
	if err != nil {
		t.Fatal(err)
	}
	m := z.TOC[1]
	hdr := blob[offs[1]:m.UncompressedOffset]
	for name, mutate := range map[string]func(*FileMetadata){
		"size":  func(m *FileMetadata) { m.UncompressedSize++ },
		"mode":  func(m *FileMetadata) { m.Mode ^= 0o4000 },
		"uid":   func(m *FileMetadata) { m.UID++ },
		"mtime": func(m *FileMetadata) { m.ModTime = m.ModTime.Add(1) },
		"xattr": func(m *FileMetadata) { m.PAXRecords = map[string]string{PAXXattrPrefix + "user.x": "y"} },
		"name":  func(m *FileMetadata) { m.Name += "x" },
	} {
		e := m
		mutate(&e)
		if err := VerifyHeader(&e, hdr); !errors.Is(err, ErrHeaderMismatch) {
			t.Errorf("%s changed: err = %v, want ErrHeaderMismatch", name, err)
		}
	}
	if err := VerifyHeader(&m, hdr[:len(hdr)-1]); !errors.Is(err, ErrHeaderMismatch) {
		t.Errorf("truncated header: err = %v", err)
	}
	if err := VerifyHeader(&m, append(bytes.Clone(hdr), make([]byte, 512)...)); !errors.Is(err, ErrHeaderMismatch) {
		t.Errorf("header region too long: err = %v", err)
	}
}

func TestHeaderOffsetsOverlap(t *testing.T) {
	z := &Ztoc{TOC: []FileMetadata{
		{Name: "a", UncompressedOffset: 512, UncompressedSize: 600},
		{Name: "b", UncompressedOffset: 1536, UncompressedSize: 0}, // header would start at 1536
	}}
	if _, err := z.HeaderOffsets(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	z.TOC[1].UncompressedOffset = 2048
	offs, err := z.HeaderOffsets()
	if err != nil || offs[0] != 0 || offs[1] != 1536 {
		t.Fatalf("offsets %v, %v", offs, err)
	}
}

// TestReaderTamperedSpan flips one byte in a copy of each layer: reading the
// span holding it fails with ErrSpanDigest and returns no data, while the
// other spans still read.
func TestReaderTamperedSpan(t *testing.T) {
	ctx := context.Background()
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, err := Unmarshal(f.Ztoc(t))
			if err != nil {
				t.Fatal(err)
			}
			blob := f.Layer(t)
			victim := SpanID(z.NumSpans() / 2)
			s, err := z.Span(victim)
			if err != nil {
				t.Fatal(err)
			}
			blob[(s.CompressedStart+s.CompressedEnd)/2] ^= 0x40
			fetch := NewFileFetcher(bytes.NewReader(blob))
			data, err := z.ReadSpan(ctx, fetch, victim)
			if !errors.Is(err, ErrSpanDigest) || data != nil {
				t.Fatalf("tampered span %d: data %d bytes, err %v; want ErrSpanDigest", victim, len(data), err)
			}
			if _, err := z.ReadSpan(ctx, fetch, 0); victim != 0 && err != nil {
				t.Fatalf("untouched span 0: %v", err)
			}
		})
	}
}

// TestReaderShortBlob checks that a blob shorter than the zTOC says gives an
// error, not a hang or a wrong answer.
func TestReaderShortBlob(t *testing.T) {
	f := ztoctest.Lookup(t, "plain.tar")
	z, _ := openFixture(t, f)
	blob := f.Layer(t)
	fetch := NewFileFetcher(bytes.NewReader(blob[:len(blob)-1]))
	if _, err := z.ReadSpan(context.Background(), fetch, z.MaxSpanID); err == nil {
		t.Fatal("ReadSpan of a truncated blob succeeded")
	}
}

// TestReaderOpen reads files by name: the last duplicate wins, hardlinks
// are followed, symlinks and directories are refused, and each span is
// fetched once for a front-to-back read.
func TestReaderOpen(t *testing.T) {
	ctx := context.Background()
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			z, fh := openFixture(t, f)
			cf := &countingFetcher{FileFetcher: NewFileFetcher(fh)}
			r := NewReader(z, cf)
			last := map[string]ztoctest.ExpectEntry{}
			for _, e := range f.Expect.TOC {
				last[filepath.Clean(e.Name)] = e
			}
			for name, e := range last {
				rd, m, err := r.Open(ctx, name)
				switch e.Type {
				case TypeReg:
					if err != nil {
						t.Fatalf("Open(%s): %v", name, err)
					}
					cf.fetches = 0
					h := sha256.New()
					if _, err := io.Copy(h, rd); err != nil {
						t.Fatalf("read %s: %v", name, err)
					}
					if got := hex.EncodeToString(h.Sum(nil)); got != e.ContentSHA256 {
						t.Errorf("%s: sha256 %s, want %s", name, got, e.ContentSHA256)
					}
					first, lastSpan := z.SpansFor(m.UncompressedOffset, m.UncompressedSize)
					if cf.fetches > int(lastSpan-first)+1 {
						t.Errorf("%s: %d fetches for spans %d..%d", name, cf.fetches, first, lastSpan)
					}
				case TypeHardlink:
					if err != nil {
						t.Errorf("Open(hardlink %s): %v", name, err)
					} else if m.Name != last[filepath.Clean(e.Linkname)].Name {
						t.Errorf("hardlink %s resolved to %s, want %s", name, m.Name, e.Linkname)
					}
				default:
					if !errors.Is(err, ErrNotRegular) {
						t.Errorf("Open(%s %s): err = %v, want not-regular", e.Type, name, err)
					}
				}
			}
			if _, _, err := r.Open(ctx, "no/such/file"); err == nil {
				t.Error("Open of a missing file succeeded")
			}
		})
	}
}

func TestReaderReadAtEdges(t *testing.T) {
	ctx := context.Background()
	f := ztoctest.Lookup(t, "plain.tar")
	z, fh := openFixture(t, f)
	blob := f.Layer(t)
	r := NewReader(z, NewFileFetcher(fh))
	size := z.UncompressedArchiveSize
	p := make([]byte, 100)
	if n, err := r.ReadAt(ctx, p, size-40); n != 40 || err != io.EOF || !bytes.Equal(p[:40], blob[size-40:size]) {
		t.Errorf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := r.ReadAt(ctx, p, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v", n, err)
	}
	if _, err := r.ReadAt(ctx, p, -1); err == nil {
		t.Error("ReadAt at -1 succeeded")
	}
	// A read straddling a span boundary.
	s, _ := z.Span(1)
	big := make([]byte, 1000)
	if n, err := r.ReadAt(ctx, big, s.UncompressedStart-500); err != nil || n != 1000 ||
		!bytes.Equal(big, blob[s.UncompressedStart-500:s.UncompressedStart+500]) {
		t.Errorf("ReadAt across spans = %d, %v", n, err)
	}
}
