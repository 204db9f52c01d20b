// Package ztoctest gives tests their layers. It locates and describes the
// compatibility fixtures made by the AWS SOCI tooling (testdata/fixtures at
// the repository root, copied from the project's shared fixture set), so that the codec, builder, reader and
// FUSE tests all check themselves against the same reference data; and it
// generates deterministic tar and tar.gz layers (Layer, Content) so that
// every package's tests build their own layers the same way.
//
// It is imported only from _test.go files. It deliberately does not import
// package ztoc, so that ztoc's own (internal) tests can use it without an
// import cycle.
package ztoctest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fixturesPath is the fixtures directory (README.md, ztoc/ and
// soci-v2-layout/) relative to the repository root.
const fixturesPath = "testdata/fixtures"

// expectSuffix ends the name of every fixture's expectation file.
const expectSuffix = ".expect.json"

// Fixture is one reference layer with the zTOC the reference builder made
// for it and what that zTOC says.
type Fixture struct {
	// Name is the layer's file name, e.g. "mixed.tar.gz".
	Name string
	// LayerPath is the path of the layer blob.
	LayerPath string
	// ZtocPath is the path of the zTOC flatbuffer.
	ZtocPath string
	// Expect is the decoded NAME.expect.json.
	Expect Expect
}

// Layer reads the layer blob, failing the test on error.
func (f Fixture) Layer(t testing.TB) []byte {
	t.Helper()
	return readFile(t, f.LayerPath)
}

// Ztoc reads the zTOC bytes, failing the test on error.
func (f Fixture) Ztoc(t testing.TB) []byte {
	t.Helper()
	return readFile(t, f.ZtocPath)
}

// Gzip reports whether the fixture's layer is gzip-compressed.
func (f Fixture) Gzip() bool { return f.Expect.CompressionAlgorithm == "gzip" }

// Expect mirrors a fixture's NAME.expect.json field by field; decoding
// rejects unknown fields, so a change to the files shows up here.
type Expect struct {
	Layer                   string             `json:"layer"`
	LayerDigest             string             `json:"layer_digest"`
	LayerMediaType          string             `json:"layer_media_type"`
	SpanSize                int64              `json:"span_size"`
	Ztoc                    string             `json:"ztoc"`
	ZtocDigest              string             `json:"ztoc_digest"`
	ZtocSize                int64              `json:"ztoc_size"`
	Version                 string             `json:"version"`
	BuildToolIdentifier     string             `json:"build_tool_identifier"`
	CompressionAlgorithm    string             `json:"compression_algorithm"`
	CompressedArchiveSize   int64              `json:"compressed_archive_size"`
	UncompressedArchiveSize int64              `json:"uncompressed_archive_size"`
	MaxSpanID               int32              `json:"max_span_id"`
	Checkpoints             []ExpectCheckpoint `json:"checkpoints,omitempty"`
	SpanDigests             []string           `json:"span_digests"`
	TOC                     []ExpectEntry      `json:"toc"`
}

// ExpectCheckpoint is one gzip checkpoint; the window is given by its
// sha256 (lower-case hex).
type ExpectCheckpoint struct {
	In           int64  `json:"in"`
	Out          int64  `json:"out"`
	Bits         uint8  `json:"bits"`
	WindowSHA256 string `json:"window_sha256"`
}

// ExpectEntry is one TOC entry with its fields as stored in the zTOC, plus,
// for regular files, the sha256 (lower-case hex) of the file's bytes.
type ExpectEntry struct {
	Name               string            `json:"name"`
	Type               string            `json:"type"`
	UncompressedOffset int64             `json:"uncompressed_offset"`
	UncompressedSize   int64             `json:"uncompressed_size"`
	Linkname           string            `json:"linkname,omitempty"`
	Mode               int64             `json:"mode"`
	UID                uint32            `json:"uid"`
	GID                uint32            `json:"gid"`
	Uname              string            `json:"uname,omitempty"`
	Gname              string            `json:"gname,omitempty"`
	ModTime            string            `json:"mod_time"`
	Devmajor           int64             `json:"devmajor,omitempty"`
	Devminor           int64             `json:"devminor,omitempty"`
	PAXRecords         map[string]string `json:"pax_records,omitempty"`
	ContentSHA256      string            `json:"content_sha256,omitempty"`
}

// RepoRoot returns the directory holding the module's go.mod, searching
// upwards from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("ztoctest: working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("ztoctest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// FixturesDir returns the fixtures directory, testdata/fixtures under the
// repository root. The fixtures are part of the repository, so their
// absence fails the test rather than skipping it.
func FixturesDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), filepath.FromSlash(fixturesPath))
	if fi, err := os.Stat(filepath.Join(dir, "ztoc")); err != nil || !fi.IsDir() {
		t.Fatalf("ztoctest: fixtures not found at %s (they are committed there): %v", dir, err)
	}
	return dir
}

// LayoutDir returns the OCI image layout the AWS tooling wrote with a SOCI
// v2 index (soci-v2-layout/ under FixturesDir).
func LayoutDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(FixturesDir(t), "soci-v2-layout")
}

// Fixtures returns every zTOC fixture (sorted by name) with its parsed
// expectation file. It fails the test when none are found or one is
// malformed.
func Fixtures(t testing.TB) []Fixture {
	t.Helper()
	dir := filepath.Join(FixturesDir(t), "ztoc")
	paths, err := filepath.Glob(filepath.Join(dir, "*"+expectSuffix))
	if err != nil {
		t.Fatalf("ztoctest: list fixtures: %v", err)
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		t.Fatalf("ztoctest: no %s files in %s", expectSuffix, dir)
	}
	out := make([]Fixture, 0, len(paths))
	for _, p := range paths {
		f, err := loadFixture(dir, p)
		if err != nil {
			t.Fatalf("ztoctest: %v", err)
		}
		out = append(out, f)
	}
	return out
}

// Lookup returns the fixture whose layer is named name (e.g. "plain.tar"),
// failing the test when there is none.
func Lookup(t testing.TB, name string) Fixture {
	t.Helper()
	for _, f := range Fixtures(t) {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("ztoctest: no fixture named %q", name)
	return Fixture{}
}

func loadFixture(dir, expectPath string) (Fixture, error) {
	raw, err := os.ReadFile(expectPath)
	if err != nil {
		return Fixture{}, fmt.Errorf("read expectation: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var e Expect
	if err := dec.Decode(&e); err != nil {
		return Fixture{}, fmt.Errorf("decode %s: %w", expectPath, err)
	}
	name := strings.TrimSuffix(filepath.Base(expectPath), expectSuffix)
	if e.Layer != name || e.Ztoc == "" {
		return Fixture{}, fmt.Errorf("%s: layer %q / ztoc %q do not match the file name", expectPath, e.Layer, e.Ztoc)
	}
	f := Fixture{
		Name:      name,
		LayerPath: filepath.Join(dir, e.Layer),
		ZtocPath:  filepath.Join(dir, e.Ztoc),
		Expect:    e,
	}
	for _, p := range []string{f.LayerPath, f.ZtocPath} {
		if _, err := os.Stat(p); err != nil {
			return Fixture{}, fmt.Errorf("fixture %s: %w", name, err)
		}
	}
	return f, nil
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ztoctest: %v", err)
	}
	if len(b) == 0 {
		t.Fatalf("ztoctest: %v", errors.New(path+" is empty"))
	}
	return b
}
