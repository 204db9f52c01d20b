package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/moby/sys/mountinfo"
	"github.com/ociseek/ociseek/index"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// bindFS stands in for the FUSE file system at the FileSystem seam: a
// "lazy" mount is a real bind mount of a directory holding the layer's
// files, so overlay, unmount and restore behave as with a real mount.
// mountErr, when set, is returned instead of mounting.
type bindFS struct {
	src      string
	mountErr error
	checkErr error

	mu       sync.Mutex
	mounts   map[string]map[string]string // mountpoint → labels
	unmounts int
}

func newBindFS(t *testing.T, mountErr error) *bindFS {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "lazy.txt"), []byte("served lazily"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &bindFS{src: src, mountErr: mountErr, mounts: map[string]map[string]string{}}
}

func (f *bindFS) Mount(_ context.Context, mp string, labels map[string]string) error {
	if f.mountErr != nil {
		return fmt.Errorf("mount layer: %w", f.mountErr)
	}
	if err := unix.Mount(f.src, mp, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts[mp] = labels
	return nil
}

func (f *bindFS) Check(context.Context, string, map[string]string) error { return f.checkErr }

func (f *bindFS) Unmount(_ context.Context, mp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, mp)
	f.unmounts++
	return unix.Unmount(mp, 0)
}

// dirUnpacker writes one file, or fails after writing it (a partial
// unpack, which must not leak into the overlay fallback).
type dirUnpacker struct{ err error }

func (u dirUnpacker) Unpack(_ context.Context, dir string, labels map[string]string) error {
	if labels[snapshots.LabelSnapshotRef] == "" {
		return errors.New("unpacker got no labels")
	}
	if err := os.WriteFile(filepath.Join(dir, "unpacked.txt"), []byte("unpacked"), 0o644); err != nil {
		return err
	}
	return u.err
}

type harness struct {
	t   *testing.T
	ctx context.Context
	sn  *Snapshotter
	reg *prometheus.Registry
}

func newHarness(t *testing.T, root string, fsys FileSystem, opts ...Opt) *harness {
	t.Helper()
	requireRoot(t)
	ctx := namespaces.WithNamespace(logtest.WithT(context.Background(), t), "test")
	reg := prometheus.NewRegistry()
	sn, err := New(ctx, root, fsys, append(opts, WithRegisterer(reg))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sn.UnmountAll(ctx)
		sn.Close()
	})
	return &harness{t: t, ctx: ctx, sn: sn, reg: reg}
}

// unpackPrepare is the Prepare containerd's unpacker makes for a layer.
func (h *harness) unpackPrepare(target, parent string) (string, error) {
	key := "extract-1 " + target
	labels := map[string]string{
		snapshots.LabelSnapshotRef:                target,
		"containerd.io/snapshot/cri.layer-digest": "sha256:" + fmt.Sprintf("%064d", 1),
	}
	_, err := h.sn.Prepare(h.ctx, key, parent, snapshots.WithLabels(labels))
	return key, err
}

func (h *harness) count(o Outcome, r Reason) float64 {
	return testutil.ToFloat64(h.sn.metrics.decisions.WithLabelValues(string(o), string(r)))
}

func (h *harness) wantDecision(name string, o Outcome, r Reason) snapshots.Info {
	h.t.Helper()
	info, err := h.sn.Stat(h.ctx, name)
	if err != nil {
		h.t.Fatalf("stat %s: %v", name, err)
	}
	if got := info.Labels[LabelDecision]; got != string(o) {
		h.t.Errorf("%s: decision label %q, want %q", name, got, o)
	}
	if got := info.Labels[LabelDecisionReason]; got != string(r) {
		h.t.Errorf("%s: reason label %q, want %q", name, got, r)
	}
	if got := h.count(o, r); got != 1 {
		h.t.Errorf("metric %s/%s = %v, want 1", o, r, got)
	}
	return info
}

// readThrough mounts a view on name and returns the content of file.
func (h *harness) readThrough(name, file string) (string, error) {
	key := "view-" + name + file
	mounts, err := h.sn.View(h.ctx, key, name)
	if err != nil {
		return "", err
	}
	defer h.sn.Remove(h.ctx, key)
	dir := h.t.TempDir()
	for _, m := range mounts {
		if err := m.Mount(dir); err != nil {
			return "", err
		}
	}
	defer unix.Unmount(dir, 0)
	b, err := os.ReadFile(filepath.Join(dir, file))
	return string(b), err
}

func TestDecide(t *testing.T) {
	other := errors.New("registry down")
	cases := []struct {
		err      error
		unpacker bool
		want     Decision
	}{
		{nil, true, Decision{OutcomeLazy, ReasonMounted}},
		{fmt.Errorf("discover: %w", index.ErrNoIndex), true, Decision{OutcomeOverlay, ReasonNoIndex}},
		{fmt.Errorf("layer x: %w", index.ErrNoZtoc), true, Decision{OutcomeLocalUnpack, ReasonNoZtoc}},
		{fmt.Errorf("layer x: %w", index.ErrNoZtoc), false, Decision{OutcomeOverlay, ReasonNoUnpacker}},
		{other, true, Decision{OutcomeLocalUnpack, ReasonMountFailed}},
		{fmt.Errorf("img: %w: %w", index.ErrIndexNotTrusted, index.ErrNoIndex), true, Decision{OutcomeOverlay, ReasonV1NotTrusted}},
		{fmt.Errorf("find zTOC: %w", index.ErrZtocTooLarge), true, Decision{OutcomeLocalUnpack, ReasonZtocTooLarge}},
		{fmt.Errorf("find zTOC: %w", index.ErrZtocTooLarge), false, Decision{OutcomeOverlay, ReasonNoUnpacker}},
		{fmt.Errorf("find zTOC: %w", index.ErrZtocBudget), true, Decision{OutcomeLocalUnpack, ReasonZtocBudget}},
		{other, false, Decision{OutcomeOverlay, ReasonNoUnpacker}},
		{fmt.Errorf("mount: %w: %w", errors.New("fs says rejected"), index.ErrZtocRejected), true, Decision{OutcomeLocalUnpack, ReasonZtocRejected}},
		// The daemon could not unpack what it may not read: containerd pulls.
		{fmt.Errorf("find index: %w: %w", index.ErrUnauthorized, index.ErrNoIndex), true, Decision{OutcomeOverlay, ReasonUnauthorized}},
	}
	for _, c := range cases {
		if got := decide(c.err, c.unpacker); got != c.want {
			t.Errorf("decide(%v, %v) = %v, want %v", c.err, c.unpacker, got, c.want)
		}
	}
}

func TestPrepareLazy(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys)
	key, err := h.unpackPrepare("layer-1", "")
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare = %v, want AlreadyExists", err)
	}
	if _, err := h.sn.Stat(h.ctx, key); !errdefs.IsNotFound(err) {
		t.Errorf("active snapshot still there after lazy commit: %v", err)
	}
	info := h.wantDecision("layer-1", OutcomeLazy, ReasonMounted)
	if info.Kind != snapshots.KindCommitted || info.Labels[LabelRemote] != LabelRemoteValue || info.Labels[LabelNamespace] != "test" {
		t.Errorf("layer info = %+v", info)
	}
	if got, err := h.readThrough("layer-1", "lazy.txt"); err != nil || got != "served lazily" {
		t.Errorf("read through lazy layer: %q, %v", got, err)
	}
	// A second unpack of the same layer is answered from the metastore.
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Prepare = %v, want AlreadyExists", err)
	}
}

func TestPrepareNoIndexGoesOverlay(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, index.ErrNoIndex), WithUnpacker(dirUnpacker{}))
	key, err := h.unpackPrepare("layer-1", "")
	if err != nil {
		t.Fatalf("Prepare = %v, want mounts", err)
	}
	h.wantDecision(key, OutcomeOverlay, ReasonNoIndex)
	// containerd applies the layer and commits; the decision stays visible.
	if err := h.sn.Commit(h.ctx, "layer-1", key, snapshots.WithLabels(map[string]string{"by": "containerd"})); err != nil {
		t.Fatal(err)
	}
	info := h.wantDecision("layer-1", OutcomeOverlay, ReasonNoIndex)
	if info.Labels["by"] != "containerd" || info.Labels[LabelRemote] != "" {
		t.Errorf("committed labels = %v", info.Labels)
	}
}

func TestPrepareNoZtocUnpacksLocally(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, index.ErrNoZtoc), WithUnpacker(dirUnpacker{}))
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare = %v, want AlreadyExists", err)
	}
	info := h.wantDecision("layer-1", OutcomeLocalUnpack, ReasonNoZtoc)
	if info.Labels[LabelRemote] != "" {
		t.Error("locally unpacked layer is labelled remote")
	}
	if got, err := h.readThrough("layer-1", "unpacked.txt"); err != nil || got != "unpacked" {
		t.Errorf("read unpacked layer: %q, %v", got, err)
	}
	usage, err := h.sn.Usage(h.ctx, "layer-1")
	if err != nil || usage.Size == 0 {
		t.Errorf("usage of unpacked layer = %+v, %v", usage, err)
	}
}

// TestPrepareOversizedZtocUnpacksLocally: a layer whose zTOC is over the
// discovery bounds is unpacked by the daemon, and the labels say why.
func TestPrepareOversizedZtocUnpacksLocally(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, index.ErrZtocTooLarge), WithUnpacker(dirUnpacker{}))
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare = %v, want AlreadyExists", err)
	}
	h.wantDecision("layer-1", OutcomeLocalUnpack, ReasonZtocTooLarge)
}

// TestPrepareUntrustedV1IndexGoesOverlay: an image whose v1 index is not
// trusted is left to containerd, with its own reason.
func TestPrepareUntrustedV1IndexGoesOverlay(t *testing.T) {
	err := fmt.Errorf("%w: %w", index.ErrIndexNotTrusted, index.ErrNoIndex)
	h := newHarness(t, t.TempDir(), newBindFS(t, err), WithUnpacker(dirUnpacker{}))
	key, err := h.unpackPrepare("layer-1", "")
	if err != nil {
		t.Fatalf("Prepare = %v, want mounts", err)
	}
	h.wantDecision(key, OutcomeOverlay, ReasonV1NotTrusted)
}

func TestPrepareMountErrorUnpacksLocally(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, errors.New("registry said 500")), WithUnpacker(dirUnpacker{}))
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare = %v, want AlreadyExists", err)
	}
	h.wantDecision("layer-1", OutcomeLocalUnpack, ReasonMountFailed)
}

func TestPrepareUnpackFailureFallsBackToOverlay(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, index.ErrNoZtoc), WithUnpacker(dirUnpacker{err: errors.New("diffID mismatch")}))
	key, err := h.unpackPrepare("layer-1", "")
	if err != nil {
		t.Fatalf("Prepare = %v, want mounts", err)
	}
	h.wantDecision(key, OutcomeOverlay, ReasonUnpackFailed)
	id, _ := h.idOf(key)
	if entries, _ := os.ReadDir(h.sn.upperPath(id)); len(entries) != 0 {
		t.Errorf("partial unpack left %d entries for containerd to apply over", len(entries))
	}
	if got := h.count(OutcomeLocalUnpack, ReasonNoZtoc); got != 0 {
		t.Errorf("failed unpack counted as local-unpack: %v", got)
	}
}

func TestPrepareWithoutUnpacker(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, index.ErrNoZtoc))
	key, err := h.unpackPrepare("layer-1", "")
	if err != nil {
		t.Fatalf("Prepare = %v, want mounts", err)
	}
	h.wantDecision(key, OutcomeOverlay, ReasonNoUnpacker)
}

func TestPrepareLazyDisabled(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys, DisableLazy())
	key, err := h.unpackPrepare("layer-1", "")
	if err != nil {
		t.Fatalf("Prepare = %v, want mounts", err)
	}
	h.wantDecision(key, OutcomeOverlay, ReasonLazyDisabled)
	if len(fsys.mounts) != 0 {
		t.Error("FileSystem asked to mount with lazy loading disabled")
	}
}

func TestPlainPrepareRecordsNoDecision(t *testing.T) {
	h := newHarness(t, t.TempDir(), newBindFS(t, nil))
	if _, err := h.sn.Prepare(h.ctx, "container", ""); err != nil {
		t.Fatal(err)
	}
	info, _ := h.sn.Stat(h.ctx, "container")
	if _, ok := info.Labels[LabelDecision]; ok {
		t.Errorf("container snapshot has a decision label: %v", info.Labels)
	}
}

func (h *harness) idOf(key string) (string, error) {
	var id string
	err := h.sn.ms.WithTransaction(h.ctx, false, func(ctx context.Context) (err error) {
		id, _, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return id, err
}

func TestRemoveUnmountsLazyLayer(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys)
	h.unpackPrepare("layer-1", "")
	id, err := h.idOf("layer-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sn.Remove(h.ctx, "layer-1"); err != nil {
		t.Fatal(err)
	}
	if fsys.unmounts != 1 {
		t.Errorf("unmounts = %d, want 1", fsys.unmounts)
	}
	if _, err := os.Stat(h.sn.dir(id)); !os.IsNotExist(err) {
		t.Errorf("snapshot directory still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fsys.src, "lazy.txt")); err != nil {
		t.Errorf("removal went through the mount into the layer source: %v", err)
	}
}

func TestRestoreRemountsLazyLayers(t *testing.T) {
	root := t.TempDir()
	fsys := newBindFS(t, nil)
	h := newHarness(t, root, fsys)
	h.unpackPrepare("layer-1", "")
	id, _ := h.idOf("layer-1")
	// The previous daemon stops without unmounting (SIGTERM).
	h.sn.Close()

	fsys2 := newBindFS(t, nil)
	h2 := newHarness(t, root, fsys2)
	mp := h2.sn.upperPath(id)
	labels, ok := fsys2.mounts[mp]
	if !ok {
		t.Fatalf("layer not mounted again; mounts: %v", fsys2.mounts)
	}
	if labels[snapshots.LabelSnapshotRef] != "layer-1" || labels["containerd.io/snapshot/cri.layer-digest"] == "" {
		t.Errorf("restored with labels %v", labels)
	}
	if n, _ := countMounts(mp); n != 1 {
		t.Errorf("%d mounts stacked on %s, want 1 (stale mount must be released first)", n, mp)
	}
}

func TestRestoreFailure(t *testing.T) {
	root := t.TempDir()
	h := newHarness(t, root, newBindFS(t, nil))
	h.unpackPrepare("layer-1", "")
	h.sn.UnmountAll(h.ctx)
	h.sn.Close()

	ctx := logtest.WithT(context.Background(), t)
	broken := newBindFS(t, errors.New("credentials gone"))
	if _, err := New(ctx, root, broken); err == nil {
		t.Fatal("New succeeded with a lazy layer it cannot mount")
	}
	sn, err := New(ctx, root, broken, AllowInvalidMountsOnRestart())
	if err != nil {
		t.Fatalf("New with AllowInvalidMountsOnRestart: %v", err)
	}
	sn.Close()
}

func TestUnusableParentFailsChildPrepare(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys)
	h.unpackPrepare("layer-1", "")
	fsys.checkErr = errors.New("registry gone")
	_, err := h.sn.Prepare(h.ctx, "container", "layer-1")
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("Prepare on unusable lazy parent = %v, want Unavailable", err)
	}
}

func countMounts(mp string) (int, error) {
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	return len(infos), err
}

// TestStackedLayers mounts a container on a lazy layer below a locally
// unpacked one, as a pull of a sparsely indexed image does, and reads both
// through overlay.
func TestStackedLayers(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys, WithUnpacker(dirUnpacker{}))
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	fsys.mountErr = index.ErrNoZtoc
	if _, err := h.unpackPrepare("layer-2", "layer-1"); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	mounts, err := h.sn.Prepare(h.ctx, "container", "layer-2")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, m := range mounts {
		if err := m.Mount(dir); err != nil {
			t.Fatalf("mount %+v: %v", m, err)
		}
	}
	defer unix.Unmount(dir, 0)
	for file, want := range map[string]string{"lazy.txt": "served lazily", "unpacked.txt": "unpacked"} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", file, b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lazy.txt"), []byte("changed"), 0o644); err != nil {
		t.Errorf("container cannot write over a lazy file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(fsys.src, "lazy.txt")); string(b) != "served lazily" {
		t.Errorf("container write reached the lazy layer: %q", b)
	}
}

// slowFS blocks in Mount until its ctx ends, like a registry that hangs.
type slowFS struct{ bindFS }

func (f *slowFS) Mount(ctx context.Context, _ string, _ map[string]string) error {
	<-ctx.Done()
	return fmt.Errorf("resolve layer: %w", ctx.Err())
}

func TestMountTimeout(t *testing.T) {
	h := newHarness(t, t.TempDir(), &slowFS{}, WithMountTimeout(50*time.Millisecond), WithUnpacker(dirUnpacker{}))
	if _, err := h.unpackPrepare("layer-1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare after a hung mount = %v, want the layer unpacked locally", err)
	}
	h.wantDecision("layer-1", OutcomeLocalUnpack, ReasonMountFailed)
}

// TestConcurrentUnpacksOfOneLayer: containerd may unpack the same layer
// for two pulls at once. Every caller must hear AlreadyExists, one layer
// must be committed, and the losers' mounts and directories must go.
func TestConcurrentUnpacksOfOneLayer(t *testing.T) {
	fsys := newBindFS(t, nil)
	h := newHarness(t, t.TempDir(), fsys)
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			labels := map[string]string{snapshots.LabelSnapshotRef: "layer-1"}
			_, err := h.sn.Prepare(h.ctx, fmt.Sprintf("extract-%d layer-1", i), "", snapshots.WithLabels(labels))
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; !errdefs.IsAlreadyExists(err) {
			t.Errorf("Prepare = %v, want AlreadyExists", err)
		}
	}
	if got := h.count(OutcomeLazy, ReasonMounted); got != 1 {
		t.Errorf("lazy decisions counted = %v, want 1", got)
	}
	if err := h.sn.Cleanup(h.ctx); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(h.sn.snapshotsDir())
	if len(entries) != 1 || len(fsys.mounts) != 1 {
		t.Errorf("after the race: %d snapshot dirs, %d mounts; want 1 and 1", len(entries), len(fsys.mounts))
	}
}
