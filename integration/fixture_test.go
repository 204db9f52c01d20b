package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestAWSLayoutMountsLazily pushes the SOCI-enabled (v2) image that AWS's
// soci convert wrote, pulls it with ociseek pull, and reads every regular
// file of every layer back through the FUSE mounts, comparing it with the
// content the reference tooling recorded.
func TestAWSLayoutMountsLazily(t *testing.T) {
	ctx := testContext(t)
	layout := ztoctest.LayoutDir(t)
	reg := regtest.Start(t, regtest.KindDistribution)
	reg.PushLayout(t, layout, "aws", "v2")
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	ref := reg.Ref("aws", "v2")
	out, err := env.Pull(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ociseek pull:\n%s", out)

	manifest, diffIDs := layoutImage(t, layout)
	_, rows, err := env.Explain(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range manifest.Layers {
		if rows[l.Digest.String()] != [2]string{"lazy", "mounted-unverified"} {
			t.Errorf("layer %s: explain says %v, want lazy mounted-unverified (background completion is off)", l.Digest, rows[l.Digest.String()])
		}
	}
	dirs := layerDirs(t, env, identity.ChainIDs(diffIDs))
	expects := fixtureExpectations(t)
	for i, l := range manifest.Layers {
		files, ok := expects[l.Digest]
		if !ok {
			t.Fatalf("layer %s is not one of the fixture layers", l.Digest)
		}
		for name, sum := range files {
			b, err := os.ReadFile(filepath.Join(dirs[i], name))
			if err != nil {
				t.Errorf("layer %d: %v", i+1, err)
				continue
			}
			if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
				t.Errorf("layer %d: %s reads back with sha256 %x, want %s", i+1, name, got, sum)
			}
		}
		t.Logf("layer %d (%s): %d files read back", i+1, l.Digest, len(files))
	}
}

// layerDirs returns the directory serving each layer (bottom first): the
// lowerdirs of an overlay view of the top layer, which list the layers top
// first.
//
// The view's mounts are read from the same `ctr snapshots view` call that
// creates it. A view made by ctr has no lease and no gc.root label, so
// containerd's garbage collector (triggered, for one, by the lease ociseek
// pull deletes when it finishes) may remove it at any moment; asking for
// its mounts in a second ctr call then fails with "snapshot does not
// exist" now and then. The lowerdirs themselves are committed snapshots
// the image keeps alive.
func layerDirs(t *testing.T, env *harness.Env, chain []digest.Digest) []string {
	t.Helper()
	ctx := testContext(t)
	top := chain[len(chain)-1].String()
	out, err := env.Containerd.Ctr(ctx, "snapshots", "--snapshotter", "soci", "view", "--mounts", "fixture-view", top)
	if err != nil {
		t.Fatal(err)
	}
	var mounts []struct {
		Type    string
		Options []string
	}
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		t.Fatalf("view mounts: %v: %s", err, out)
	}
	var lower []string
	for _, m := range mounts {
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				lower = strings.Split(v, ":")
			}
		}
	}
	if len(lower) != len(chain) {
		t.Fatalf("view has %d lowerdirs, want %d: %s", len(lower), len(chain), out)
	}
	dirs := make([]string, len(lower))
	for i, d := range lower {
		dirs[len(lower)-1-i] = d
	}
	return dirs
}

// layoutImage returns the image manifest and diffIDs of the only platform
// of the layout's image index.
func layoutImage(t *testing.T, layout string) (ocispec.Manifest, []digest.Digest) {
	t.Helper()
	var root, idx ocispec.Index
	readJSON(t, filepath.Join(layout, "index.json"), &root)
	readBlob(t, layout, root.Manifests[0].Digest, &idx)
	for _, m := range idx.Manifests {
		if m.MediaType != ocispec.MediaTypeImageManifest || m.Platform == nil {
			continue
		}
		var manifest ocispec.Manifest
		var cfg ocispec.Image
		readBlob(t, layout, m.Digest, &manifest)
		readBlob(t, layout, manifest.Config.Digest, &cfg)
		return manifest, cfg.RootFS.DiffIDs
	}
	t.Fatalf("no image manifest in %s", layout)
	return ocispec.Manifest{}, nil
}

func readBlob(t *testing.T, layout string, d digest.Digest, v any) {
	t.Helper()
	readJSON(t, filepath.Join(layout, "blobs", d.Algorithm().String(), d.Encoded()), v)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// fixtureExpectations maps each fixture layer digest to its regular files
// (the last entry of a name wins, as in tar) and their sha256. Whiteout
// markers are left out: the layer presents them the overlayfs way.
func fixtureExpectations(t *testing.T) map[digest.Digest]map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(ztoctest.FixturesDir(t), "ztoc", "*.expect.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("fixture expectations: %v (%d files)", err, len(paths))
	}
	out := map[digest.Digest]map[string]string{}
	for _, p := range paths {
		var e struct {
			LayerDigest digest.Digest `json:"layer_digest"`
			TOC         []struct {
				Name   string `json:"name"`
				Type   string `json:"type"`
				SHA256 string `json:"content_sha256"`
			} `json:"toc"`
		}
		readJSON(t, p, &e)
		files := map[string]string{}
		for _, f := range e.TOC {
			if strings.Contains(f.Name, ".wh.") {
				continue
			}
			if f.Type == "reg" {
				files[f.Name] = f.SHA256
			} else {
				delete(files, f.Name)
			}
		}
		out[e.LayerDigest] = files
	}
	return out
}
