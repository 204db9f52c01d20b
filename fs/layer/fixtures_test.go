package layer

import (
	"bytes"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestFixturesMatchGNUTar mounts every reference fixture and compares the
// mount with the same layer extracted by GNU tar as root: names, types,
// modes, owners, mtimes (ns), sizes, link counts, device numbers, link
// targets, contents and xattrs. Whiteouts are compared as overlayfs wants
// them from a lower layer (tar extracts the markers as plain files).
func TestFixturesMatchGNUTar(t *testing.T) {
	requireFUSE(t)
	for _, f := range ztoctest.Fixtures(t) {
		for _, via := range []string{"memory", "spans"} {
			t.Run(f.Name+"/"+via, func(t *testing.T) {
				compareWithGNUTar(t, &f, via)
			})
		}
	}
}

// compareWithGNUTar mounts a fixture with its bytes served either from the
// gunzipped tar in memory or through ztoc.Reader (spans inflated from their
// checkpoints, as the span layer serves them) and compares it with GNU tar.
func compareWithGNUTar(t *testing.T, f *ztoctest.Fixture, via string) {
	z, err := ztoc.Unmarshal(f.Ztoc(t))
	if err != nil {
		t.Fatalf("decode %s: %v", f.ZtocPath, err)
	}
	toc := fixtureTOC(t, f)
	var r Reader = newMemReader(uncompressed(t, f.Layer(t)))
	if via == "spans" {
		r = ztoc.NewReader(z, ztoc.NewFileFetcher(bytes.NewReader(f.Layer(t))))
	}
	mnt := mountTree(t, toc, r, Options{})

	dir := t.TempDir()
	cmd := exec.Command("tar", "-xpf", f.LayerPath, "--xattrs", "--xattrs-include=*",
		"--numeric-owner", "--same-owner", "-C", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}
	want := overlayView(scanTree(t, dir))
	got := scanTree(t, mnt)
	for _, d := range append(implicitDirs(toc, want), reenteredDirs(toc)...) {
		// Synthesised parents: tar stamps them with the time of
		// extraction, the mount with the epoch. Re-entered dirs:
		// GNU tar restores a directory's mtime once the archive
		// moves on, so a later entry inside it bumps the mtime;
		// the TOC (and containerd, which sets directory times
		// last) keep the entry's.
		w, wok := want[d]
		g, gok := got[d]
		if !wok || !gok {
			continue // diffTrees reports it
		}
		w.Mtime, g.Mtime = 0, 0
		want[d], got[d] = w, g
	}
	diffTrees(t, want, got)
}

// fixtureTOC decodes the zTOC the reference builder wrote for a fixture and
// returns its TOC, checking it against the fixture's expectation so that a
// codec regression shows up as such rather than as a tree difference.
func fixtureTOC(t testing.TB, f *ztoctest.Fixture) []ztoc.FileMetadata {
	t.Helper()
	z, err := ztoc.Unmarshal(f.Ztoc(t))
	if err != nil {
		t.Fatalf("decode %s: %v", f.ZtocPath, err)
	}
	want := tocFromExpect(t, f.Expect.TOC)
	if len(z.TOC) != len(want) {
		t.Fatalf("decoded TOC has %d entries, expect.json %d", len(z.TOC), len(want))
	}
	for i := range want {
		if g, w := z.TOC[i], want[i]; g.Name != w.Name || g.UncompressedOffset != w.UncompressedOffset ||
			!g.ModTime.Equal(w.ModTime) || len(g.PAXRecords) != len(w.PAXRecords) {
			t.Fatalf("decoded TOC entry %d = %+v, expect.json %+v", i, g, w)
		}
	}
	return z.TOC
}

// overlayView rewrites an extracted tree the way the mount presents
// whiteouts: ".wh.X" becomes a character device 0:0 named X (unless X
// exists), ".wh..wh..opq" becomes the opaque xattr on its directory, other
// ".wh..wh.*" names disappear.
func overlayView(tree map[string]fileInfo) map[string]fileInfo {
	out := make(map[string]fileInfo, len(tree))
	for n, fi := range tree {
		if !strings.HasPrefix(filepath.Base(n), whiteoutPrefix) {
			out[n] = fi
		}
	}
	for n, fi := range tree {
		dir, base := filepath.Split(n)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == whiteoutOpaque:
			d := out[dir]
			d.Xattrs = addXattr(d.Xattrs, opaqueXattrTrusted+`="y"`)
			out[dir] = d
		case strings.HasPrefix(base, whiteoutMeta):
		case strings.HasPrefix(base, whiteoutPrefix):
			target := filepath.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
			if _, real := out[target]; !real {
				out[target] = fileInfo{Type: "char", UID: fi.UID, GID: fi.GID, Mtime: fi.Mtime, Nlink: 1}
			}
		}
	}
	return out
}

func addXattr(list, kv string) string {
	var items []string
	if list != "" {
		items = strings.Split(list, ",")
	}
	items = append(items, kv)
	sort.Strings(items)
	return strings.Join(items, ",")
}

// reenteredDirs lists the directories that get an entry after the archive
// has left them.
func reenteredDirs(toc []ztoc.FileMetadata) []string {
	var out []string
	for i, e := range toc {
		if e.Type != ztoc.TypeDir {
			continue
		}
		d := path.Clean(e.Name)
		left := false
		for _, later := range toc[i+1:] {
			inside := strings.HasPrefix(path.Clean(later.Name), d+"/")
			if !inside {
				left = true
			} else if left {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// implicitDirs lists the directories of tree that no TOC entry names.
func implicitDirs(toc []ztoc.FileMetadata, tree map[string]fileInfo) []string {
	explicit := map[string]bool{}
	for _, e := range toc {
		if e.Type == ztoc.TypeDir {
			explicit[path.Clean(strings.TrimPrefix(e.Name, "/"))] = true
		}
	}
	var out []string
	for n, fi := range tree {
		if fi.Type == "dir" && !explicit[n] {
			out = append(out, n)
		}
	}
	return out
}
