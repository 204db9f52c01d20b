package layer

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ociseek/ociseek/ztoc"
)

func reg(name string) ztoc.FileMetadata {
	return ztoc.FileMetadata{Name: name, Type: ztoc.TypeReg, Mode: 0o644}
}

func dir(name string, mode int64) ztoc.FileMetadata {
	return ztoc.FileMetadata{Name: name, Type: ztoc.TypeDir, Mode: mode}
}

func link(name, typ, target string) ztoc.FileMetadata {
	return ztoc.FileMetadata{Name: name, Type: typ, Linkname: target, Mode: 0o777}
}

// lookup follows a slash-separated path in the model.
func lookup(t *testing.T, tr *tree, p string) *meta {
	t.Helper()
	m := tr.root
	for part := range strings.SplitSeq(p, "/") {
		m = m.children[part]
		if m == nil {
			t.Fatalf("%s: no %q", p, part)
		}
	}
	return m
}

func TestBuildRejectsHostileEntries(t *testing.T) {
	long := strings.Repeat("x", 256)
	cases := map[string][]ztoc.FileMetadata{
		"dotdot":                {reg("a/../../etc/passwd")},
		"dotdot at end":         {reg("a/..")},
		"nul in name":           {reg("a\x00b")},
		"component too long":    {reg("d/" + long)},
		"path too long":         {reg(strings.Repeat("a/", 2049))},
		"through symlink":       {link("l", ztoc.TypeSymlink, "/etc"), reg("l/passwd")},
		"through file":          {reg("f"), reg("f/x")},
		"through whiteout":      {reg(".wh.x/y")},
		"hardlink missing":      {link("h", ztoc.TypeHardlink, "nothing")},
		"hardlink to dir":       {dir("d/", 0o755), link("h", ztoc.TypeHardlink, "d")},
		"hardlink dotdot":       {reg("a"), link("h", ztoc.TypeHardlink, "../a")},
		"hardlink later target": {link("h", ztoc.TypeHardlink, "a"), reg("a")},
		"empty symlink":         {link("s", ztoc.TypeSymlink, "")},
		"symlink too long":      {link("s", ztoc.TypeSymlink, strings.Repeat("a/", 2048))},
		"unknown type":          {{Name: "g", Type: "sparse"}},
		"root as file":          {reg("./")},
		"device out of range":   {{Name: "d", Type: ztoc.TypeChar, Devmajor: 1 << 12}},
		"negative device":       {{Name: "d", Type: ztoc.TypeBlock, Devminor: -1}},
		"negative size":         {{Name: "f", Type: ztoc.TypeReg, UncompressedSize: -1}},
		"range overflows":       {{Name: "f", Type: ztoc.TypeReg, UncompressedOffset: 1 << 62, UncompressedSize: 1 << 62}},
		"whiteout of dot":       {reg(".wh..")},
		"empty whiteout":        {reg(".wh.")},
		"xattr value too big": {{Name: "f", Type: ztoc.TypeReg,
			PAXRecords: map[string]string{"SCHILY.xattr.user.big": strings.Repeat("v", 1<<16+1)}}},
	}
	for name, toc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := buildTree(toc)
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("buildTree = %v, want ErrInvalidEntry", err)
			}
		})
	}
}

func TestBuildNormalisesNames(t *testing.T) {
	tr, err := buildTree([]ztoc.FileMetadata{reg("/abs"), reg("./dot/./x"), reg("a//b"), dir("./", 0o700)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"abs", "dot/x", "a/b"} {
		lookup(t, tr, p)
	}
	if tr.root.mode != syscall.S_IFDIR|0o700 {
		t.Errorf("root mode %o, want dir 0700 from the ./ entry", tr.root.mode)
	}
}

func TestBuildLaterEntryWins(t *testing.T) {
	first := reg("bin/tool")
	first.Mode, first.UncompressedSize = 0o4755, 10
	second := reg("bin/tool")
	second.UncompressedSize = 3
	toc := []ztoc.FileMetadata{
		dir("d/", 0o700), reg("d/keep"), dir("d/", 0o755), // dirs merge
		first, link("bin/hard", ztoc.TypeHardlink, "bin/tool"), second,
		dir("x/", 0o755), reg("x/gone"), reg("x"), // file replaces dir
	}
	tr, err := buildTree(toc)
	if err != nil {
		t.Fatal(err)
	}
	if d := lookup(t, tr, "d"); d.mode&0o7777 != 0o755 || d.children["keep"] == nil {
		t.Errorf("merged dir: mode %o children %v", d.mode&0o7777, d.children)
	}
	tool, hard := lookup(t, tr, "bin/tool"), lookup(t, tr, "bin/hard")
	if tool.size != 3 || tool.nlink != 1 {
		t.Errorf("bin/tool size %d nlink %d, want the later entry alone", tool.size, tool.nlink)
	}
	if hard.size != 10 || hard.mode&0o7777 != 0o4755 || hard.nlink != 1 {
		t.Errorf("bin/hard size %d mode %o nlink %d, want the first bin/tool, setuid, nlink 1",
			hard.size, hard.mode&0o7777, hard.nlink)
	}
	if x := lookup(t, tr, "x"); x.isDir() {
		t.Errorf("x is still a directory")
	}
}

func TestBuildHardlinksShareOneInode(t *testing.T) {
	tr, err := buildTree([]ztoc.FileMetadata{reg("a/f"), link("b/h1", ztoc.TypeHardlink, "a/f"),
		link("h2", ztoc.TypeHardlink, "/b/h1"), link("s", ztoc.TypeSymlink, "a/f"),
		link("s2", ztoc.TypeHardlink, "s")})
	if err != nil {
		t.Fatal(err)
	}
	f := lookup(t, tr, "a/f")
	if f != lookup(t, tr, "b/h1") || f != lookup(t, tr, "h2") || f.nlink != 3 {
		t.Errorf("a/f, b/h1, h2 not one inode with nlink 3 (nlink %d)", f.nlink)
	}
	if s := lookup(t, tr, "s"); s != lookup(t, tr, "s2") || s.nlink != 2 || s.linkname != "a/f" {
		t.Errorf("hardlinked symlink: nlink %d target %q", s.nlink, s.linkname)
	}
	if tr.names != 7 { // a, a/f, b, b/h1, h2, s, s2
		t.Errorf("names = %d, want 7", tr.names)
	}
}

func TestBuildWhiteouts(t *testing.T) {
	wh := reg("d/.wh.gone")
	wh.UID, wh.ModTime = 7, time.Unix(1700000000, 5)
	tr, err := buildTree([]ztoc.FileMetadata{wh, reg("d/.wh.real"), reg("d/real"),
		reg("o/.wh..wh..opq"), reg("o/.wh..wh.plnk"), reg(".wh.top")})
	if err != nil {
		t.Fatal(err)
	}
	g := lookup(t, tr, "d/gone")
	if g.mode != syscall.S_IFCHR || g.rdev != 0 || g.uid != 7 || !g.mtime.Equal(wh.ModTime) {
		t.Errorf("d/gone: mode %o rdev %d uid %d mtime %v, want char 0:0 with the marker's owner and time",
			g.mode, g.rdev, g.uid, g.mtime)
	}
	if r := lookup(t, tr, "d/real"); r.mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("a real entry must win over its whiteout in the same layer")
	}
	o := lookup(t, tr, "o")
	if !o.opaque || len(o.children) != 0 || !tr.hasXattrs {
		t.Errorf("o: opaque %v children %v hasXattrs %v", o.opaque, o.children, tr.hasXattrs)
	}
	lookup(t, tr, "top")
	for n := range tr.root.children {
		if strings.HasPrefix(n, whiteoutPrefix) {
			t.Errorf("marker %q visible", n)
		}
	}
}

func TestBuildImplicitParentsAndNlink(t *testing.T) {
	tr, err := buildTree([]ztoc.FileMetadata{reg("a/b/c/f"), dir("a/x/", 0o700)})
	if err != nil {
		t.Fatal(err)
	}
	b := lookup(t, tr, "a/b")
	if b.mode != syscall.S_IFDIR|0o755 || b.uid != 0 || b.mtime.Unix() != 0 {
		t.Errorf("implicit a/b: mode %o uid %d mtime %v", b.mode, b.uid, b.mtime)
	}
	if a := lookup(t, tr, "a"); a.nlink != 4 { // ".", parent's entry, b/.., x/..
		t.Errorf("a nlink = %d, want 4", a.nlink)
	}
	if tr.root.nlink != 3 {
		t.Errorf("root nlink = %d, want 3", tr.root.nlink)
	}
}

// TestBuildFileCapabilities: a capability setxattr(2) would refuse, and
// overlayfs's private xattrs, are not served.
func TestBuildFileCapabilities(t *testing.T) {
	v2 := "\x01\x00\x00\x02" + strings.Repeat("\x00", 16)
	bad := "\x01\x00\x00\x02"
	e := reg("ping")
	e.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": v2}
	e2 := reg("bad")
	e2.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": bad, "SCHILY.xattr.user.k": "v",
		"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.overlay.opaque": "y"}
	tr, err := buildTree([]ztoc.FileMetadata{e, e2})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(lookup(t, tr, "ping").xattrs[capabilityXattr]); got != v2 {
		t.Errorf("valid v2 capability not kept: %q", got)
	}
	if names := lookup(t, tr, "bad").xattrNames; len(names) != 1 || names[0] != "user.k" {
		t.Errorf("malformed capability or overlay metadata not dropped: %v", names)
	}
}
