package ztoc

import (
	"bytes"
	"os"
	"regexp"
	"testing"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// dropKeys removes the lines of the expectation files that Info cannot
// produce: the fixture's own file names and the contents' hashes.
var dropKeys = regexp.MustCompile(`(?m)^\s*"(layer|ztoc|content_sha256)": "[^"]*",?\n`)

// trailingComma fixes up the object whose last key was dropped.
var trailingComma = regexp.MustCompile(`,(\n\s*})`)

// TestInfoText checks Info's JSON text, indented by two spaces as the
// expectation files are, against those files: same keys in the same order,
// same value formats.
func TestInfoText(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			b := f.Ztoc(t)
			z, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			info := z.Info(b)
			info.LayerDigest, info.LayerMediaType = f.Expect.LayerDigest, f.Expect.LayerMediaType
			var got bytes.Buffer
			if err := info.WriteJSON(&got); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(f.LayerPath + ".expect.json")
			if err != nil {
				t.Fatal(err)
			}
			want := trailingComma.ReplaceAll(dropKeys.ReplaceAll(raw, nil), []byte("$1"))
			if g, w := bytes.TrimSpace(got.Bytes()), bytes.TrimSpace(want); !bytes.Equal(g, w) {
				i := firstDiff(g, w)
				t.Fatalf("Info JSON differs at byte %d:\ngot  %q\nwant %q", i, g[max(0, i-80):min(len(g), i+80)], w[max(0, i-80):min(len(w), i+80)])
			}
		})
	}
}
