package layer

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/ztoc"
)

var fuzzTypes = []string{ztoc.TypeReg, ztoc.TypeDir, ztoc.TypeSymlink, ztoc.TypeHardlink,
	ztoc.TypeChar, ztoc.TypeBlock, ztoc.TypeFifo, "bogus"}

// fuzzTOC decodes a TOC from text: one entry per line, "T NAME [LINK]"
// where T is a digit picking the type.
func fuzzTOC(data string) []ztoc.FileMetadata {
	var toc []ztoc.FileMetadata
	for line := range strings.SplitSeq(data, "\n") {
		if line == "" {
			continue
		}
		fields := strings.SplitN(line, " ", 3)
		typ, _ := strconv.Atoi(fields[0])
		e := ztoc.FileMetadata{Type: fuzzTypes[uint(typ)%uint(len(fuzzTypes))], Mode: int64(len(line) * 37),
			UncompressedSize: int64(len(line)), Devmajor: int64(len(line) % 5), Devminor: int64(typ)}
		if len(fields) > 1 {
			e.Name = fields[1]
		}
		if len(fields) > 2 {
			e.Linkname = fields[2]
			e.PAXRecords = map[string]string{ztoc.PAXXattrPrefix + "user." + fields[2]: fields[1]}
		}
		toc = append(toc, e)
	}
	return toc
}

// FuzzBuildTree feeds hostile TOCs to the tree builder: it must never panic,
// must fail only with ErrInvalidEntry, and a tree it accepts must be one the
// kernel can be shown: plain names, no markers, exact link counts.
func FuzzBuildTree(f *testing.F) {
	for _, seed := range []string{
		"1 bin/\n0 bin/tool\n3 bin/hard bin/tool\n0 bin/tool\n2 etc/l ../x",
		"0 a/.wh.b\n0 a/.wh..wh..opq\n0 .wh..wh.plnk\n0 a/b\n1 ./\n",
		"0 ../../etc/passwd\n0 /abs/x\n2 l /etc\n0 l/passwd\n3 h nothing",
		"1 d/\n0 d/f\n0 d\n3 e d/f\n4 dev/null\n5 dev/sda\n6 run/p\n7 weird",
		"0 " + strings.Repeat("n", 300) + "\n0 a\x00b\n0 .wh.\n0 .wh..",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		tr, err := buildTree(fuzzTOC(data))
		if err != nil {
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("error without ErrInvalidEntry: %v", err)
			}
			return
		}
		checkTree(t, tr)
	})
}

// checkTree asserts the invariants of an accepted tree.
func checkTree(t *testing.T, tr *tree) {
	refs := map[*meta]uint32{}
	names := 0
	var visit func(d *meta)
	visit = func(d *meta) {
		subdirs := uint32(0)
		for name, c := range d.children {
			names++
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") ||
				len(name) > maxNameLen || strings.HasPrefix(name, whiteoutPrefix) {
				t.Fatalf("bad name %q in tree", name)
			}
			if c.ino == 0 {
				t.Fatalf("%q has no inode number", name)
			}
			if c.isDir() {
				subdirs++
				visit(c)
			} else {
				refs[c]++
			}
		}
		if d.nlink != 2+subdirs {
			t.Fatalf("dir nlink %d, want %d", d.nlink, 2+subdirs)
		}
	}
	visit(tr.root)
	for m, n := range refs {
		if m.nlink != n {
			t.Fatalf("nlink %d, %d names link it", m.nlink, n)
		}
	}
	if names != tr.names {
		t.Fatalf("names = %d, counted %d", tr.names, names)
	}
}
