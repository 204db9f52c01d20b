package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// runCLI runs the command line in-process and returns its outputs.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

// TestZtocBuildFixtures builds every fixture layer with the CLI and checks
// the printed digest and the written file against the reference zTOC.
func TestZtocBuildFixtures(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out.ztoc")
			out, _, err := runCLI(t, "ztoc", "build", "--span-size", itoa(f.Expect.SpanSize), "-o", dest, f.LayerPath)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != f.Expect.ZtocDigest {
				t.Errorf("printed %q, want %s", out, f.Expect.ZtocDigest)
			}
			b, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, f.Ztoc(t)) {
				t.Errorf("written zTOC differs from the reference")
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestZtocBuildDefaultOutput checks the default output name (LAYER.ztoc)
// and flags given after the layer argument.
func TestZtocBuildDefaultOutput(t *testing.T) {
	f := ztoctest.Lookup(t, "plain.tar")
	layer := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(layer, f.Layer(t), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "ztoc", "build", layer, "--span-size=300000")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(layer + ".ztoc")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != f.Expect.ZtocDigest || !bytes.Equal(b, f.Ztoc(t)) {
		t.Errorf("default output %s.ztoc / digest %q do not match the reference", layer, out)
	}
}

func TestZtocBuildErrors(t *testing.T) {
	dir := t.TempDir()
	zstd := filepath.Join(dir, "layer.zst")
	if err := os.WriteFile(zstd, []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args  []string
		usage bool
		msg   string
	}{
		"no layer":      {[]string{"ztoc", "build"}, true, "want 1 arguments"},
		"bad span":      {[]string{"ztoc", "build", "--span-size", "0", zstd}, true, "positive"},
		"stdin no -o":   {[]string{"ztoc", "build", "-"}, true, "-o is needed"},
		"missing file":  {[]string{"ztoc", "build", filepath.Join(dir, "nope")}, false, "no such file"},
		"zstd":          {[]string{"ztoc", "build", zstd}, false, "zstd"},
		"unknown verb":  {[]string{"ztoc", "frobnicate"}, true, "unknown command"},
		"unknown group": {[]string{"frobnicate"}, true, "unknown command"},
		"no command":    {nil, true, "no command"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := runCLI(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.msg) || isUsage(err) != c.usage {
				t.Fatalf("err = %v, want one containing %q (usage %v)", err, c.msg, c.usage)
			}
		})
	}
	if _, err := os.Stat(zstd + ".ztoc"); !os.IsNotExist(err) {
		t.Errorf("a failed build left %s.ztoc behind", zstd)
	}
}

func TestHelp(t *testing.T) {
	out, _, err := runCLI(t, "help")
	if err != nil || !strings.Contains(out, "ztoc") {
		t.Fatalf("help = %q, %v", out, err)
	}
	_, errOut, err := runCLI(t, "ztoc", "build", "-h")
	if err != nil || !strings.Contains(errOut, "--span-size") && !strings.Contains(errOut, "-span-size") {
		t.Fatalf("ztoc build -h = %q, %v", errOut, err)
	}
}

// TestZtocInfoJSON checks that --json prints the fixture's expectation
// (minus file contents and what only the index knows).
func TestZtocInfoJSON(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			out, _, err := runCLI(t, "ztoc", "info", "--json", f.ZtocPath)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err)
			}
			e := f.Expect
			e.Layer, e.Ztoc, e.LayerDigest, e.LayerMediaType = "", "", "", ""
			for i := range e.TOC {
				e.TOC[i].ContentSHA256 = ""
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(jsonText(e)), &want); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"layer", "ztoc", "layer_digest", "layer_media_type"} {
				delete(want, k)
			}
			if jsonText(got) != jsonText(want) {
				t.Errorf("info --json differs from the expectation:\n got %.300s\nwant %.300s", jsonText(got), jsonText(want))
			}
		})
	}
}

func TestZtocInfoText(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	out, _, err := runCLI(t, "ztoc", "info", "--spans", "--files", f.ZtocPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{f.Expect.ZtocDigest, "gzip", "24 (span size 65536)", "67 (",
		f.Expect.SpanDigests[23], "etc/link-to-config -> config.txt"} {
		if !strings.Contains(out, want) {
			t.Errorf("info output lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := runCLI(t, "ztoc", "info", f.LayerPath); err == nil || !strings.Contains(err.Error(), "invalid ztoc") {
		t.Errorf("info of a layer (not a zTOC): err = %v", err)
	}
}

// TestZtocGetFile reads every regular file of every fixture (the last entry
// of each name) through the CLI and checks its sha256.
func TestZtocGetFile(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			last := map[string]ztoctest.ExpectEntry{}
			for _, e := range f.Expect.TOC {
				last[path.Clean(e.Name)] = e
			}
			for name, e := range last {
				want := e.ContentSHA256
				if e.Type == "hardlink" {
					want = last[path.Clean(e.Linkname)].ContentSHA256
				}
				if want == "" {
					continue
				}
				out, _, err := runCLI(t, "ztoc", "get-file", "--layer", f.LayerPath, f.ZtocPath, "/"+name)
				if err != nil {
					t.Fatalf("get-file %s: %v", name, err)
				}
				if sum := sha256.Sum256([]byte(out)); hex.EncodeToString(sum[:]) != want {
					t.Errorf("get-file %s: sha256 %x, want %s", name, sum, want)
				}
			}
		})
	}
}

func TestZtocGetFileErrors(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	other := ztoctest.Lookup(t, "plain.tar")
	for name, c := range map[string]struct {
		args []string
		msg  string
	}{
		"missing":     {[]string{"--layer", f.LayerPath, f.ZtocPath, "no/such"}, "not in the layer"},
		"symlink":     {[]string{"--layer", f.LayerPath, f.ZtocPath, "etc/link-to-config"}, "symlink to config.txt"},
		"directory":   {[]string{"--layer", f.LayerPath, f.ZtocPath, "etc"}, "is a dir"},
		"no layer":    {[]string{f.ZtocPath, "etc/config.txt"}, "--layer is required"},
		"wrong layer": {[]string{"--layer", other.LayerPath, f.ZtocPath, "etc/config.txt"}, "wrong layer"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := runCLI(t, append([]string{"ztoc", "get-file"}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want one containing %q", err, c.msg)
			}
		})
	}
}

// TestZtocGetFileTampered checks that a layer whose span bytes changed is
// refused by the verification pass before any file byte is printed.
func TestZtocGetFileTampered(t *testing.T) {
	f := ztoctest.Lookup(t, "mixed.tar.gz")
	blob := f.Layer(t)
	var off int64
	for _, e := range f.Expect.TOC {
		if e.Name == "etc/config.txt" {
			off = e.UncompressedOffset
		}
	}
	// Flip a byte just inside the span holding the file's data.
	var in int64
	for _, c := range f.Expect.Checkpoints {
		if c.Out <= off {
			in = c.In
		}
	}
	blob[in+1] ^= 1
	layer := filepath.Join(t.TempDir(), "tampered.tar.gz")
	if err := os.WriteFile(layer, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "ztoc", "get-file", "--layer", layer, f.ZtocPath, "etc/config.txt")
	if err == nil || !strings.Contains(err.Error(), "ztoc does not match the layer") || out != "" {
		t.Fatalf("get-file from a tampered layer: %d bytes out, err %v", len(out), err)
	}
}
