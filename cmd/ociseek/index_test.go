package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// runRegistryCLI runs the registry verbs of this file in-process, through
// the same dispatcher as the binary.
func runRegistryCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmds := []command{createCommand(), convertCommand(), indexCommand()}
	err := dispatch(ctx, "ociseek", cmds, args, &out, &errb)
	return out.String(), errb.String(), err
}

// testLayer returns a gzip tar layer of a few hundred KiB, deterministic
// in seed.
func testLayer(t *testing.T, seed int) []byte {
	t.Helper()
	files := make([]ztoctest.File, 6)
	for i := range files {
		body := bytes.Repeat([]byte(fmt.Sprintf("seed %d file %d\n", seed, i)), 4000)
		files[i] = ztoctest.File{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Body: body}
	}
	return ztoctest.Layer(t, files, ztoctest.LayerOptions{Gzip: true})
}

// TestIndexVerbs drives create → index ls → index info → index rm on every
// registry leg, as a user would, and checks the printed results.
func TestIndexVerbs(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			reg := regtest.Start(t, kind)
			img := reg.PushImage(t, "cli", [][]byte{testLayer(t, 1), testLayer(t, 2)}, nil)
			ref := reg.Ref("cli", "latest")

			out, _, err := runRegistryCLI(t, "create", "--span-size", "65536", "--min-layer-size", "0", ref)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			fields := strings.Fields(out)
			if len(fields) < 3 || !strings.HasPrefix(fields[0], "sha256:") || fields[1] != "linux/amd64" || fields[2] != "2" {
				t.Fatalf("create printed %q, want '<digest> linux/amd64 2 zTOCs'", out)
			}
			idxDigest := fields[0]

			out, _, err = runRegistryCLI(t, "index", "ls", "--json", ref)
			if err != nil {
				t.Fatalf("index ls: %v", err)
			}
			var listed []map[string]any
			if err := json.Unmarshal([]byte(out), &listed); err != nil {
				t.Fatalf("index ls --json printed %q: %v", out, err)
			}
			wantBy := "fallback-tag"
			if kind.HasReferrersAPI() {
				wantBy = "referrers-api"
			}
			if len(listed) != 1 || listed[0]["digest"] != idxDigest || listed[0]["found_by"] != wantBy ||
				listed[0]["artifact_type"] != index.ArtifactTypeV1 || listed[0]["ztocs"] != 2.0 ||
				listed[0]["span_size"] != 65536.0 || listed[0]["manifest"] != img.Digest.String() {
				t.Errorf("index ls --json: %s", out)
			}

			out, _, err = runRegistryCLI(t, "index", "info", "--repo", ref, "--json", idxDigest)
			if err != nil {
				t.Fatalf("index info: %v", err)
			}
			var info indexInfo
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatalf("index info --json printed %q: %v", out, err)
			}
			if info.Subject == nil || info.Subject.Digest != img.Digest || len(info.Ztocs) != 2 || info.BuildTool != "AWS SOCI CLI v0.2" {
				t.Errorf("index info: %s", out)
			}

			out, _, err = runRegistryCLI(t, "index", "rm", ref, idxDigest)
			if err != nil {
				t.Fatalf("index rm: %v", err)
			}
			if !strings.Contains(out, "removed "+idxDigest) {
				t.Errorf("index rm printed %q", out)
			}
			if !kind.HasReferrersAPI() && !strings.Contains(out, "deleted fallback tag") {
				t.Errorf("index rm did not report deleting the emptied fallback tag: %q", out)
			}
			out, _, err = runRegistryCLI(t, "index", "ls", "--json", ref)
			if err != nil || strings.TrimSpace(out) != "[]" {
				t.Errorf("index ls after rm: %q, %v", out, err)
			}
		})
	}
}

// fixtureSourceLayout writes an OCI layout holding the AWS fixture's
// original image, tagged v1.
func fixtureSourceLayout(t *testing.T) string {
	t.Helper()
	fixture := ztoctest.LayoutDir(t)
	src := t.TempDir()
	blobs := filepath.Join(src, "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	manifest := "8f72808b06c372e29bc961f804a901457dcf1104422591b83c35505ace25f614"
	for _, b := range []string{manifest, "1a6dc0b8e5f625ee453ff599b734bd38ae30bfbcafe5653553a92080d0998ab1",
		"9592fb23e84d93ee8083e0759b36a34c216e58bbba2ad40546c72f9f550c645c",
		"a50cd439890f3ee845b511e18cca6979f822b78016edc9b50cdbee092b2aa417",
		"cdb96ab7995fe8b0b694deda9521de3a7dfb5567bf204989bc50f942c0ec957c"} {
		buf, err := os.ReadFile(filepath.Join(fixture, "blobs", "sha256", b))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(blobs, b), buf, 0o644)
	}
	os.WriteFile(filepath.Join(src, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(src, "index.json"), []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:`+manifest+`","size":716,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`), 0o644)
	return src
}

// TestConvertLayoutCLI converts the AWS fixture's original image between
// OCI layouts with the CLI and expects the reference's image index digest.
func TestConvertLayoutCLI(t *testing.T) {
	src := fixtureSourceLayout(t)
	dst := filepath.Join(t.TempDir(), "out")

	out, _, err := runRegistryCLI(t, "convert", "--span-size", "65536", "--min-layer-size", "0", "oci:"+src+":v1", "oci:"+dst+":soci")
	if err != nil {
		t.Fatalf("convert: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := "sha256:ac1ec407065d97aa4cfbed49e396d9da501224edc8dbc1a1e7198fb7ad1ca098"
	if lines[len(lines)-1] != want {
		t.Errorf("convert printed %q, want the reference image index %s last", out, want)
	}
	if !strings.HasPrefix(lines[0], "sha256:b732223e4f83885f5e39ae2a5b795bf353a9abd457c7e33df724734b4256365f\tlinux/amd64\t3") {
		t.Errorf("convert printed %q, want the reference SOCI index first", out)
	}
}

// TestRegistryVerbErrors: bad invocations are usage errors that say what
// is wrong; an unreachable registry names the host.
func TestRegistryVerbErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"create"}, "want 1 arguments"},
		{[]string{"create", "--span-size", "0", "127.0.0.1:1/x:y"}, "--span-size"},
		{[]string{"create", "--user", "nopassword", "127.0.0.1:1/x:y"}, "USER:PASSWORD"},
		{[]string{"create", "--platform", "linux/amd64/v9/x", "127.0.0.1:1/x:y"}, "--platform"},
		{[]string{"convert", "oci:", "oci:/tmp/x"}, "empty layout path"},
		{[]string{"index", "info", "sha256:00"}, "--repo is required"},
		{[]string{"create", "127.0.0.1:1/x:y"}, "127.0.0.1:1"},
	}
	for _, c := range cases {
		_, _, err := runRegistryCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

// TestIndexLsV2: convert the fixture image into each registry, then
// `index ls` finds the v2 index through the manifest annotation.
func TestIndexLsV2(t *testing.T) {
	src := fixtureSourceLayout(t)
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			reg := regtest.Start(t, kind)
			ref := reg.Ref("v2", "soci")
			if _, _, err := runRegistryCLI(t, "convert", "--span-size", "65536", "--min-layer-size", "0", "oci:"+src+":v1", ref); err != nil {
				t.Fatalf("convert: %v", err)
			}
			out, _, err := runRegistryCLI(t, "index", "ls", "--json", ref)
			if err != nil {
				t.Fatalf("index ls: %v", err)
			}
			var listed []listedIndex
			if err := json.Unmarshal([]byte(out), &listed); err != nil {
				t.Fatal(err)
			}
			if len(listed) != 1 || listed[0].Digest != "sha256:b732223e4f83885f5e39ae2a5b795bf353a9abd457c7e33df724734b4256365f" ||
				listed[0].FoundBy != "v2-annotation" || listed[0].ArtifactType != index.ArtifactTypeV2 ||
				listed[0].Ztocs != 3 || listed[0].SpanSize != 65536 || listed[0].Platform != "linux/amd64" {
				t.Errorf("index ls --json: %s", out)
			}
			out, _, err = runRegistryCLI(t, "index", "ls", ref)
			if err != nil || !strings.Contains(out, "v2-annotation") {
				t.Errorf("index ls: %q, %v", out, err)
			}
		})
	}
}
