package snapshot

import (
	"testing"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

func TestDecideBeforeMount(t *testing.T) {
	sized := func(v string) map[string]string { return map[string]string{LabelLayerSize: v} }
	cases := []struct {
		name     string
		disabled bool
		min      int64
		labels   map[string]string
		unpacker bool
		want     Decision
		decided  bool
	}{
		{"lazy off", true, 0, nil, true, Decision{OutcomeOverlay, ReasonLazyDisabled}, true},
		{"lazy off wins over size", true, 100, sized("1"), true, Decision{OutcomeOverlay, ReasonLazyDisabled}, true},
		{"no minimum", false, 0, sized("1"), true, Decision{}, false},
		{"below", false, 100, sized("99"), true, Decision{OutcomeLocalUnpack, ReasonBelowMinSize}, true},
		{"below without unpacker", false, 100, sized("99"), false, Decision{OutcomeOverlay, ReasonNoUnpacker}, true},
		{"equal is not below", false, 100, sized("100"), true, Decision{}, false},
		{"above", false, 100, sized("4096"), true, Decision{}, false},
		{"no label (CRI)", false, 100, nil, true, Decision{}, false},
		{"empty label", false, 100, sized(""), true, Decision{}, false},
		{"not a number", false, 100, sized("12kb"), true, Decision{}, false},
		{"negative", false, 100, sized("-5"), true, Decision{}, false},
		{"overflow", false, 100, sized("99999999999999999999"), true, Decision{}, false},
	}
	for _, c := range cases {
		got, decided := decideBeforeMount(c.disabled, c.min, c.labels, c.unpacker)
		if got != c.want || decided != c.decided {
			t.Errorf("%s: decideBeforeMount = %v, %v; want %v, %v", c.name, got, decided, c.want, c.decided)
		}
	}
}

func TestWithMinLayerSizeRejectsNegative(t *testing.T) {
	var o options
	if err := WithMinLayerSize(-1)(&o); err == nil {
		t.Error("WithMinLayerSize(-1) accepted")
	}
}

// TestPrepareBelowMinSize: a small layer is unpacked by the daemon without
// the FileSystem being asked; a layer of exactly the minimum size is
// mounted lazily.
func TestPrepareBelowMinSize(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys, WithUnpacker(dirUnpacker{}), WithMinLayerSize(1000))
	prepare := func(target, size string) error {
		labels := map[string]string{snapshots.LabelSnapshotRef: target, LabelLayerSize: size}
		_, err := h.sn.Prepare(h.ctx, "extract-1 "+target, "", snapshots.WithLabels(labels))
		return err
	}
	if err := prepare("small", "999"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a small layer = %v, want AlreadyExists (unpacked locally)", err)
	}
	info := h.wantDecision("small", OutcomeLocalUnpack, ReasonBelowMinSize)
	if info.Labels[LabelRemote] != "" || len(fsys.mounts) != 0 {
		t.Errorf("small layer went to the FileSystem: labels %v, %d mounts", info.Labels, len(fsys.mounts))
	}
	if got, err := h.readThrough("small", "unpacked.txt"); err != nil || got != "unpacked" {
		t.Errorf("read small layer: %q, %v", got, err)
	}
	if err := prepare("big", "1000"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a layer at the minimum = %v, want AlreadyExists (lazy)", err)
	}
	h.wantDecision("big", OutcomeLazy, ReasonMounted)
}
