package fs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc"
)

// TestRejectedZtocIsRecordedAndNotMountedAgain: a zTOC whose checkpoint
// window was forged fails its layer when the completion pass reaches it.
// The failure is recorded under the root, so that a new FS on the same
// root (a restarted daemon) refuses to mount the same pair again, with an
// error that wraps the sentinel cmd asked for, and explain can list it.
func TestRejectedZtocIsRecordedAndNotMountedAgain(t *testing.T) {
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/forged")
	cps := img.ztoc.Gzip.Checkpoints
	if len(cps) < 2 {
		t.Fatalf("layer has %d checkpoints, want several", len(cps))
	}
	cps[1].Window[len(cps[1].Window)-1] ^= 0xff
	b, err := ztoc.Marshal(img.ztoc)
	if err != nil {
		t.Fatal(err)
	}
	if img.ztoc, err = ztoc.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	sentinel := errors.New("sentinel of the caller")
	f := newRootFS(t, root, newSource(img), WithRejectedError(sentinel))
	mp := mountImage(t, f, img)
	m, err := f.get(mp)
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		_, done, err = m.mgr.FetchNext(context.Background())
		if !done && err != nil {
			t.Fatalf("FetchNext: %v", err)
		}
	}
	if !errors.Is(err, span.ErrLayerFailed) {
		t.Fatalf("completion = %v, want a verification failure", err)
	}
	if _, err := readFile(mp, "usr/share/data.bin"); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after the failure = %v, want EIO", err)
	}
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	opener := &countingOpener{BlobOpener: remoteBlobs()}
	again, err := New(root, newSource(img), opener, WithRejectedError(sentinel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	err = again.Mount(context.Background(), mountDir(t), img.criLabels())
	if !errors.Is(err, ErrZtocRejected) || !errors.Is(err, sentinel) {
		t.Fatalf("mount after a restart = %v, want ErrZtocRejected and the caller's sentinel", err)
	}
	if n := opener.opens.Load(); n != 0 {
		t.Errorf("the refused mount probed the registry %d times, want 0", n)
	}
	rejs, err := ReadRejections(root)
	if err != nil || len(rejs) != 1 {
		t.Fatalf("ReadRejections = %v, %v; want one record", rejs, err)
	}
	if r := rejs[0]; r.Layer != img.ref.LayerDigest || r.Ztoc != img.ztoc.Digest.Encoded() ||
		!strings.Contains(r.Reason, "window differs") {
		t.Errorf("record %+v does not name the layer, the zTOC and the window", r)
	}

	// Another, honest zTOC of the same layer is not refused.
	honest, err := ztoc.Build(context.Background(), bytes.NewReader(img.layer), ztoc.BuildOptions{SpanSize: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	img.ztoc = honest
	third := newRootFS(t, root, newSource(img))
	if err := third.Mount(context.Background(), mountDir(t), img.criLabels()); err != nil {
		t.Fatalf("mount with another zTOC of the layer: %v", err)
	}
}
