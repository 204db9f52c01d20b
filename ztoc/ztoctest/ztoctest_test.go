package ztoctest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
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
