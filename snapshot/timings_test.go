package snapshot

import (
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/ociseek/ociseek/index"
)

// TestTimingsLabel: a lazy layer and a locally unpacked one carry the
// timings label, with a start inside the Prepare call and the steps they
// ran; the value decodes with ParseTimings.
func TestTimingsLabel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mountErr   error
		wantUnpack bool
	}{
		{"lazy", nil, false},
		{"local-unpack", index.ErrNoZtoc, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, t.TempDir(), newBindFS(t, tc.mountErr), WithUnpacker(dirUnpacker{}))
			before := time.Now()
			if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
				t.Fatalf("Prepare = %v, want AlreadyExists", err)
			}
			after := time.Now()
			info, err := h.sn.Stat(h.ctx, "layer-1")
			if err != nil {
				t.Fatal(err)
			}
			tm, err := ParseTimings(info.Labels[LabelTimings])
			if err != nil {
				t.Fatalf("labels %v: %v", info.Labels, err)
			}
			if tm.Start.Before(before.Add(-time.Millisecond)) || tm.Start.After(after) {
				t.Errorf("start %v outside the Prepare call [%v, %v]", tm.Start, before, after)
			}
			if tm.Mount <= 0 || tm.Total < tm.Mount+tm.Unpack || tm.Total > after.Sub(before) {
				t.Errorf("timings %+v: want 0 < mount, mount+unpack <= total <= %v", tm, after.Sub(before))
			}
			if (tm.Unpack > 0) != tc.wantUnpack {
				t.Errorf("unpack %v, want an unpack step: %t", tm.Unpack, tc.wantUnpack)
			}
		})
	}
}

// TestParseTimings: the label value survives a round trip; a value
// without a start or with a bad duration is refused, an unknown key
// skipped.
func TestParseTimings(t *testing.T) {
	want := Timings{Start: time.Date(2026, 12, 2, 3, 4, 5, 6000, time.UTC), Mount: 412 * time.Millisecond, Total: time.Second}
	got, err := ParseTimings(want.String() + ",fetch=3s")
	if err != nil || got != want {
		t.Errorf("ParseTimings(%q) = %+v, %v; want %+v", want.String(), got, err, want)
	}
	for _, bad := range []string{"mount=1s", "start=2026-12-02T03:04:05Z,mount=soon", "start"} {
		if _, err := ParseTimings(bad); err == nil {
			t.Errorf("ParseTimings(%q) accepted", bad)
		}
	}
}
