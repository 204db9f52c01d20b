package fs

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

var (
	testManifest = digest.FromString("manifest")
	testLayer    = digest.FromString("layer")
	testIndex    = digest.FromString("index")
)

func TestLayerRefFromLabels(t *testing.T) {
	full := LayerRef{ImageRef: "registry.example:5000/team/app:v1", ManifestDigest: testManifest,
		LayerDigest: testLayer, IndexDigest: testIndex, Size: 12345}
	got, err := LayerRefFromLabels(full.Labels())
	if err != nil || got != full {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, full)
	}
	repo, err := got.Repository()
	if err != nil || repo != "registry.example:5000/team/app" {
		t.Errorf("Repository() = %q, %v", repo, err)
	}

	cri := map[string]string{
		LabelImageRef:       "docker.io/library/nginx@" + testManifest.String(),
		LabelManifestDigest: testManifest.String(),
		LabelLayerDigest:    testLayer.String(),
		LabelIndexDigest:    "", // nerdctl sends it empty
	}
	got, err = LayerRefFromLabels(cri)
	if err != nil || got.Size != 0 || got.IndexDigest != "" || got.LayerDigest != testLayer {
		t.Errorf("CRI labels: %+v, %v", got, err)
	}
}

func TestLayerRefFromLabelsErrors(t *testing.T) {
	good := LayerRef{ImageRef: "r.example/app:1", ManifestDigest: testManifest, LayerDigest: testLayer}.Labels()
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for key, val := range good {
			m[key] = val
		}
		if v == "\x00delete" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name   string
		labels map[string]string
		names  string // the label the error must name
	}{
		{"no image ref", with(LabelImageRef, "\x00delete"), LabelImageRef},
		{"image ref without host", with(LabelImageRef, "app"), LabelImageRef},
		{"image ref with spaces", with(LabelImageRef, "r.example/a b:1"), LabelImageRef},
		{"no manifest", with(LabelManifestDigest, "\x00delete"), LabelManifestDigest},
		{"bad manifest", with(LabelManifestDigest, "sha256:123"), LabelManifestDigest},
		{"no layer", with(LabelLayerDigest, ""), LabelLayerDigest},
		{"layer not a digest", with(LabelLayerDigest, "<html>"), LabelLayerDigest},
		{"bad index digest", with(LabelIndexDigest, "md5:abc"), LabelIndexDigest},
		{"size not a number", with(LabelLayerSize, "12k"), LabelLayerSize},
		{"size zero", with(LabelLayerSize, "0"), LabelLayerSize},
		{"size negative", with(LabelLayerSize, "-5"), LabelLayerSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LayerRefFromLabels(tc.labels)
			if errors.Is(err, ErrNoLabels) {
				t.Errorf("error %v wraps ErrNoLabels, but some labels are there", err)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name label %s", err, tc.names)
			}
		})
	}
}

// TestNoLabels: an unpack without any image label (containerd without
// snapshot annotations) is told apart from a malformed one.
func TestNoLabels(t *testing.T) {
	for _, labels := range []map[string]string{nil, {"containerd.io/snapshot.ref": "sha256:abc"}} {
		_, err := LayerRefFromLabels(labels)
		if !errors.Is(err, ErrNoLabels) || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("labels %v: %v, want ErrNoLabels and ErrInvalidArgument", labels, err)
		}
	}
}

// FuzzLayerRefFromLabels: labels come from image annotations, i.e. from
// whoever built the image. Parsing never panics; what it accepts round-
// trips and names a repository.
func FuzzLayerRefFromLabels(f *testing.F) {
	f.Add("r.example/app:1", testManifest.String(), testLayer.String(), "", "10")
	f.Add("localhost:5000/a/b@"+testManifest.String(), testManifest.String(), testLayer.String(), testIndex.String(), "")
	f.Add("", "sha256:", "sha512:00", "x", "-1")
	f.Fuzz(func(t *testing.T, ref, manifest, layer, idx, size string) {
		labels := map[string]string{LabelImageRef: ref, LabelManifestDigest: manifest,
			LabelLayerDigest: layer, LabelIndexDigest: idx, LabelLayerSize: size}
		l, err := LayerRefFromLabels(labels)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		back, err := LayerRefFromLabels(l.Labels())
		if err != nil || back != l {
			t.Fatalf("accepted %+v but its labels give %+v, %v", l, back, err)
		}
		if _, err := l.Repository(); err != nil {
			t.Fatalf("accepted image ref %q has no repository: %v", l.ImageRef, err)
		}
	})
}
