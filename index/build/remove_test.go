package build_test

import (
	"testing"

	"github.com/ociseek/ociseek/index/build"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestRemove creates two indices for one image, removes them one by one,
// and checks what a consumer sees after each step: the removed manifest is
// gone, the other is still listed, and after the last removal the fallback
// tag is gone too.
func TestRemove(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg *regtest.Registry) {
		ctx := testContext(t)
		img := reg.PushImage(t, "rm", [][]byte{tarGz(t, 5, 4)}, nil)
		var made []build.Result
		for _, span := range []int64{testSpan, 2 * testSpan} {
			res, err := build.Create(ctx, reg.Repository(t, "rm"), "latest", nil,
				build.CreateOptions{Options: build.Options{SpanSize: span}, Publish: fastPublish})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			made = append(made, res[0])
		}
		first, second := made[0].Index, made[1].Index

		res, err := build.Remove(ctx, reg.Repository(t, "rm"), first.Digest, fastPublish)
		if err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if res.Subject == nil || res.Subject.Digest != img.Digest {
			t.Errorf("Remove reported subject %+v, want %s", res.Subject, img.Digest)
		}
		if ok, err := reg.Repository(t, "rm").Exists(ctx, first); err != nil || ok {
			t.Errorf("removed index manifest still exists (%v, %v)", ok, err)
		}
		found := referrers(t, reg, "rm", img)
		if has(found, first.Digest) || !has(found, second.Digest) {
			t.Errorf("after removing one index, referrers are %v", found)
		}

		res, err = build.Remove(ctx, reg.Repository(t, "rm"), second.Digest, fastPublish)
		if err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if found := referrers(t, reg, "rm", img); len(found) != 0 {
			t.Errorf("after removing both indices, referrers are %v", found)
		}
		if _, tagged := tagReferrers(t, reg.Repository(t, "rm"), img.Digest); tagged {
			t.Errorf("fallback tag still exists after its last entry was removed")
		}
		if !reg.Kind.HasReferrersAPI() && !res.TagDeleted {
			t.Errorf("Remove did not report deleting the emptied tag: %+v", res)
		}
	})
}

// TestRemoveRefusesNonIndex: rm of an image manifest digest is refused and
// the image survives.
func TestRemoveRefusesNonIndex(t *testing.T) {
	reg := regtest.Start(t, regtest.KindDistribution)
	ctx := testContext(t)
	img := reg.PushImage(t, "rm", [][]byte{tarGz(t, 6, 1)}, nil)
	if _, err := build.Remove(ctx, reg.Repository(t, "rm"), img.Digest, fastPublish); err == nil {
		t.Fatal("Remove of an image manifest succeeded")
	}
	if ok, err := reg.Repository(t, "rm").Exists(ctx, img); err != nil || !ok {
		t.Errorf("image manifest gone after a refused remove (%v, %v)", ok, err)
	}
}
