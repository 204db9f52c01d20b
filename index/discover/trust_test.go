package discover

import (
	"errors"
	"strings"
	"testing"

	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestTrustedV1Repo: entries cover a registry or a repository and what is
// under it, by whole path segments.
func TestTrustedV1Repo(t *testing.T) {
	trusted := []string{"registry.example/team", "mirror.example", "other.example/a/b/..."}
	for name, want := range map[string]bool{
		"registry.example/team":              true,
		"registry.example/team/app":          true,
		"registry.example/team-b/app":        false,
		"registry.example/teamapp":           false,
		"registry.example/other":             false,
		"mirror.example/library/alpine":      true,
		"mirror.example.evil/x":              false,
		"other.example/a/b/c":                true,
		"other.example/a/bc":                 false,
		"evil.example/registry.example/team": false,
	} {
		if got := trustedV1Repo(trusted, name); got != want {
			t.Errorf("trustedV1Repo(%q) = %v, want %v", name, got, want)
		}
	}
	if trustedV1Repo([]string{"", "/"}, "registry.example/app") {
		t.Error("an empty entry trusts everything")
	}
}

// TestV1TrustPolicy: with V1Repos set, a v1 index is used only for images
// whose repository (or configured index repository) is listed; elsewhere
// Find fails with ErrIndexNotTrusted (and ErrNoIndex) without asking the
// registry for referrers. v2 indices are used everywhere.
func TestV1TrustPolicy(t *testing.T) {
	for _, kind := range regtest.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			r := regtest.Start(t, kind)
			trustedImg := pushImage(t, r, "team/app", "v1", nil, "a.txt")
			pushV1(t, r, "team/app", trustedImg, nil)
			otherImg := pushImage(t, r, "team-b/app", "v1", nil, "b.txt")
			pushV1(t, r, "team-b/app", otherImg, nil)
			// Indices kept in a trusted index repository count as trusted.
			viaIndexRepo := pushImage(t, r, "public/app", "v1", nil, "c.txt")
			pushV1(t, r, "team/indices", viaIndexRepo, nil)
			plain := pushImage(t, r, "public/v2", "plain", nil, "d.txt")
			v2 := pushIndex(t, r, "public/v2", index.NewV2(ztocsFor(t, r, "public/v2", plain.layers), nil))
			v2Img := pushImage(t, r, "public/v2", "soci", map[string]string{index.AnnotationIndexDigest: v2.Digest.String()}, "d.txt")

			rec := &recorder{}
			d, _ := newDiscoverer(through(rec, Options{
				V1Repos:    []string{r.Host + "/team"},
				IndexRepos: map[string]string{r.Host + "/public/app": r.Host + "/team/indices"},
			}))
			if _, err := d.Find(ctxT(t), r.Ref("team/app", "v1"), trustedImg.manifest.Digest, ""); err != nil {
				t.Fatalf("v1 index of a trusted repository: %v", err)
			}
			res, err := d.Find(ctxT(t), r.Ref("public/app", "v1"), viaIndexRepo.manifest.Digest, "")
			if err != nil || res.Repository != r.Host+"/team/indices" {
				t.Fatalf("v1 index in a trusted index repository: %v", err)
			}
			if res, err := d.Find(ctxT(t), r.Ref("public/v2", "soci"), v2Img.manifest.Digest, ""); err != nil || res.Method != MethodV2Annotation {
				t.Fatalf("v2 index of an untrusted repository: %v", err)
			}

			before := rec.count()
			_, err = d.Find(ctxT(t), r.Ref("team-b/app", "v1"), otherImg.manifest.Digest, "")
			if !errors.Is(err, index.ErrIndexNotTrusted) || !errors.Is(err, index.ErrNoIndex) {
				t.Fatalf("v1 index of an untrusted repository: err = %v, want ErrIndexNotTrusted and ErrNoIndex", err)
			}
			for _, p := range rec.since(before) {
				if strings.Contains(p, "/referrers/") || strings.Contains(p, "/manifests/sha256-") {
					t.Fatalf("v1 lookup in an untrusted repository: requested %s", p)
				}
			}

			// Without V1Repos every repository is trusted (the default).
			all, _ := newDiscoverer(Options{})
			if _, err := all.Find(ctxT(t), r.Ref("team-b/app", "v1"), otherImg.manifest.Digest, ""); err != nil {
				t.Fatalf("default policy: %v", err)
			}
		})
	}
}
