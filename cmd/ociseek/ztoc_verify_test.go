package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/ztoc"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestZtocVerifyFixtures verifies every reference zTOC against its layer.
func TestZtocVerifyFixtures(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			out, _, err := runCLI(t, "ztoc", "verify", "--layer", f.LayerPath, f.ZtocPath)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("ok: %d entries, %d spans, checkpoints and TOC match the layer\n",
				len(f.Expect.TOC), f.Expect.MaxSpanID+1)
			if out != want {
				t.Errorf("printed %q, want %q", out, want)
			}
		})
	}
}

// forgedLayer writes a gzip layer of shell scripts saying SAFE, with a
// first etc/passwd that a later entry replaces and a whiteout at the end,
// and returns its path and its honest zTOC.
func forgedLayer(t *testing.T) (string, *ztoc.Ztoc) {
	t.Helper()
	entries := []ztoctest.File{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/passwd", Mode: 0o644, Body: []byte("root::0:0:root:/root:/bin/sh\n")},
	}
	for i := range 60 {
		entries = append(entries,
			ztoctest.File{Name: fmt.Sprintf("bin/s%02d.sh", i), Mode: 0o755, Body: fmt.Appendf(nil, "#!/bin/sh\necho SAFE %d\n", i)},
			ztoctest.File{Name: fmt.Sprintf("bin/f%02d.dat", i), Mode: 0o644, Body: ztoctest.Content(uint64(i), 3000)})
	}
	entries = append(entries,
		ztoctest.File{Name: "etc/passwd", Mode: 0o644, Body: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		ztoctest.File{Name: "etc/.wh.shadow", Mode: 0o600})
	blob := ztoctest.Layer(t, entries, ztoctest.LayerOptions{Gzip: true})
	layer := filepath.Join(t.TempDir(), "layer.tar.gz")
	if err := os.WriteFile(layer, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := ztoc.Build(context.Background(), bytes.NewReader(blob), ztoc.BuildOptions{SpanSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return layer, z
}

func writeZtoc(t *testing.T, z *ztoc.Ztoc) string {
	t.Helper()
	b, err := ztoc.Marshal(z)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "forged.ztoc")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestZtocVerifyForged checks that verify fails and get-file prints nothing
// for a zTOC whose windows say EVIL where the layer says SAFE, and for one
// whose TOC stops before the fixed etc/passwd and the whiteout; the honest
// zTOC passes both.
func TestZtocVerifyForged(t *testing.T) {
	layer, honest := forgedLayer(t)
	out, _, err := runCLI(t, "ztoc", "get-file", "--layer", layer, writeZtoc(t, honest), "bin/s07.sh")
	if err != nil || out != "#!/bin/sh\necho SAFE 7\n" {
		t.Fatalf("honest get-file = %q, %v", out, err)
	}
	evil, err := ztoc.Unmarshal(must1(ztoc.Marshal(honest)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range evil.Gzip.Checkpoints {
		w := evil.Gzip.Checkpoints[i].Window
		copy(w, bytes.ReplaceAll(w, []byte("SAFE"), []byte("EVIL")))
	}
	short, err := ztoc.Unmarshal(must1(ztoc.Marshal(honest)))
	if err != nil {
		t.Fatal(err)
	}
	short.TOC = short.TOC[:len(short.TOC)-2]
	for name, c := range map[string]struct {
		z    *ztoc.Ztoc
		file string
		msg  string
	}{
		"evil windows": {evil, "bin/s07.sh", "window differs from the stream"},
		"short toc":    {short, "etc/passwd", `tar entry 122 ("etc/passwd") after the ztoc's last entry`},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.z.Validate(); err != nil {
				t.Fatalf("the forged zTOC should pass Validate: %v", err)
			}
			path := writeZtoc(t, c.z)
			out, _, err := runCLI(t, "ztoc", "verify", "--layer", layer, path)
			if err == nil || !strings.Contains(err.Error(), c.msg) || strings.HasPrefix(out, "ok") {
				t.Errorf("verify = %q, %v; want an error containing %q", out, err, c.msg)
			}
			out, _, err = runCLI(t, "ztoc", "get-file", "--layer", layer, path, c.file)
			if err == nil || !strings.Contains(err.Error(), c.msg) || out != "" {
				t.Errorf("get-file = %q, %v; want no bytes and an error containing %q", out, err, c.msg)
			}
		})
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestZtocVerifyErrors(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	other := ztoctest.Lookup(t, "plain.tar")
	for name, c := range map[string]struct {
		args  []string
		usage bool
		msg   string
	}{
		"no layer":    {[]string{f.ZtocPath}, true, "--layer is required"},
		"no ztoc":     {[]string{"--layer", f.LayerPath}, true, "want 1 arguments"},
		"wrong layer": {[]string{"--layer", other.LayerPath, f.ZtocPath}, false, "wrong layer"},
		"missing":     {[]string{"--layer", filepath.Join(t.TempDir(), "nope"), f.ZtocPath}, false, "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := runCLI(t, append([]string{"ztoc", "verify"}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.msg) || isUsage(err) != c.usage {
				t.Fatalf("err = %v, want one containing %q (usage %v)", err, c.msg, c.usage)
			}
		})
	}
}
