package ztoctest

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFixtures checks that every fixture loads and that its zTOC bytes match
// the digest and size its expectation file gives.
func TestFixtures(t *testing.T) {
	fs := Fixtures(t)
	if len(fs) < 5 {
		t.Fatalf("got %d fixtures, want at least 5", len(fs))
	}
	for _, f := range fs {
		b := f.Ztoc(t)
		sum := sha256.Sum256(b)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != f.Expect.ZtocDigest {
			t.Errorf("%s: ztoc digest %s, expectation says %s", f.Name, got, f.Expect.ZtocDigest)
		}
		if int64(len(b)) != f.Expect.ZtocSize {
			t.Errorf("%s: ztoc size %d, expectation says %d", f.Name, len(b), f.Expect.ZtocSize)
		}
		if len(f.Expect.TOC) == 0 {
			t.Errorf("%s: empty toc", f.Name)
		}
		if f.Gzip() != (len(f.Expect.Checkpoints) > 0) {
			t.Errorf("%s: gzip=%v but %d checkpoints", f.Name, f.Gzip(), len(f.Expect.Checkpoints))
		}
	}
	if _, err := os.Stat(filepath.Join(LayoutDir(t), "index.json")); err != nil {
		t.Errorf("v2 layout: %v", err)
	}
	if got := Lookup(t, "plain.tar"); got.Expect.CompressionAlgorithm != "uncompressed" {
		t.Errorf("plain.tar: compression %q", got.Expect.CompressionAlgorithm)
	}
}

// TestFixtureChecksums checks the committed fixtures against the sha256 list
// in their README: every listed file is present with that digest and no
// file is unlisted, so a changed or added fixture cannot go unnoticed.
func TestFixtureChecksums(t *testing.T) {
	dir := FixturesDir(t)
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "```sha256\n")
	block, _, closed := strings.Cut(block, "```")
	if !ok || !closed {
		t.Fatal("README.md has no ```sha256 block")
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("README.md checksum line %q is not sha256sum output", line)
		}
		want[name] = sum
	}
	seen := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if rel == "README.md" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		switch w, listed := want[rel]; {
		case !listed:
			t.Errorf("%s is not in README.md's checksum list", rel)
		case w != hex.EncodeToString(sum[:]):
			t.Errorf("%s has sha256 %x, README.md says %s", rel, sum, w)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("%d fixture files on disk, README.md lists %d", seen, len(want))
	}
}
