package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/index"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestMountServesLayer mounts a layer with the labels containerd's CRI
// plugin sends, reads every file through the mount, and unmounts, on a
// registry without and one with the referrers API (the blob path is the
// same; the registries differ in how they answer ranges).
func TestMountServesLayer(t *testing.T) {
	t.Parallel()
	for _, kind := range []regtest.Kind{regtest.KindDistribution, regtest.KindOlareg} {
		t.Run(string(kind), func(t *testing.T) {
			img := pushImage(t, regtest.Start(t, kind), "lazy/app")
			f := newFS(t, newSource(img))
			mp := mountDir(t)
			if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
				t.Fatalf("mount: %v", err)
			}
			if !isMounted(t, mp) {
				t.Fatal("mount returned nil but the mount table does not list the mountpoint")
			}
			checkTree(t, mp, img.entries)

			st, err := f.Status(mp)
			if err != nil {
				t.Fatal(err)
			}
			if st.Layer.Size != int64(len(img.layer)) || st.Total != int64(len(img.layer)) {
				t.Errorf("status size %d, total %d; want the blob size %d (from the zTOC)", st.Layer.Size, st.Total, len(img.layer))
			}
			if st.Entries < len(img.entries) || st.Fetched == 0 || st.Failed != nil {
				t.Errorf("status after reading everything: %+v", st)
			}
			if ls := f.Layers(); len(ls) != 1 || ls[0].Mountpoint != mp {
				t.Errorf("Layers() = %+v, want the one mount at %s", ls, mp)
			}

			if err := f.Unmount(context.Background(), mp); err != nil {
				t.Fatalf("unmount: %v", err)
			}
			if isMounted(t, mp) {
				t.Fatal("still mounted after Unmount")
			}
			if names, _ := os.ReadDir(mp); len(names) != 0 {
				t.Errorf("mountpoint holds %d names after unmount, want none", len(names))
			}
			if _, err := f.Status(mp); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Status after unmount: %v, want ErrNotFound", err)
			}
			if err := f.Check(context.Background(), mp, img.criLabels()); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Check after unmount: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestMountNerdctlLabels mounts with nerdctl's extra labels: the layer
// size and an empty index digest. A size that disagrees with the zTOC is
// refused before anything is mounted.
func TestMountNerdctlLabels(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/nerdctl")
	f := newFS(t, newSource(img))
	labels := img.criLabels()
	labels[LabelLayerSize] = fmt.Sprint(len(img.layer))
	labels[LabelIndexDigest] = ""
	mp := mountDir(t)
	if err := f.Mount(context.Background(), mp, labels); err != nil {
		t.Fatalf("mount: %v", err)
	}
	if got, err := readFile(mp, "etc/hello.txt"); err != nil || string(got) != "hello from a lazy layer\n" {
		t.Fatalf("read etc/hello.txt = %q, %v", got, err)
	}

	labels[LabelLayerSize] = fmt.Sprint(len(img.layer) + 1)
	mp2 := mountDir(t)
	err := f.Mount(context.Background(), mp2, labels)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("mount with a wrong size label: %v, want ErrInvalidArgument", err)
	}
	if isMounted(t, mp2) {
		t.Fatal("failed mount left a mount")
	}
}

// TestMountErrors checks that every failing Mount says why and leaves
// nothing mounted or recorded.
func TestMountErrors(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/errors")
	cases := []struct {
		name   string
		labels func() map[string]string
		srcErr error
		want   error
	}{
		{"no labels", func() map[string]string { return nil }, nil, errdefs.ErrInvalidArgument},
		{"no image ref", func() map[string]string { l := img.criLabels(); delete(l, LabelImageRef); return l }, nil, errdefs.ErrInvalidArgument},
		{"bad layer digest", func() map[string]string { l := img.criLabels(); l[LabelLayerDigest] = "sha256:zz"; return l }, nil, errdefs.ErrInvalidArgument},
		{"no index", img.criLabels, fmt.Errorf("discover: %w", index.ErrNoIndex), index.ErrNoIndex},
		{"no ztoc", img.criLabels, fmt.Errorf("discover: %w", index.ErrNoZtoc), index.ErrNoZtoc},
		{"blob missing", func() map[string]string {
			l := img.criLabels()
			l[LabelImageRef] = img.reg.Ref("lazy/elsewhere", "latest")
			return l
		}, nil, remote.ErrStatus},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource(img)
			src.err = tc.srcErr
			f := newFS(t, src)
			mp := mountDir(t)
			err := f.Mount(context.Background(), mp, tc.labels())
			if !errors.Is(err, tc.want) {
				t.Fatalf("mount: %v, want an error wrapping %v", err, tc.want)
			}
			if isMounted(t, mp) {
				t.Fatal("failed mount left a mount")
			}
			if len(f.Layers()) != 0 {
				t.Fatalf("failed mount left a record: %+v", f.Layers())
			}
			// The mountpoint is free again.
			src.err = nil
			if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
				t.Fatalf("mount after a failed one: %v", err)
			}
		})
	}
}

// TestMountTimeout: a zTOC lookup that never answers is cancelled at the
// mount timeout; Mount returns the deadline error and mounts nothing.
func TestMountTimeout(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/timeout")
	f := newFS(t, blockingSource{}, WithMountTimeout(200*time.Millisecond))
	mp := mountDir(t)
	err := f.Mount(context.Background(), mp, img.criLabels())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mount: %v, want DeadlineExceeded", err)
	}
	if isMounted(t, mp) || len(f.Layers()) != 0 {
		t.Fatal("timed-out mount left something behind")
	}
}

// TestMountTwice: a second mount on a used mountpoint is refused, and
// concurrent mounts of one mountpoint yield exactly one mount.
func TestMountTwice(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/twice")
	f := newFS(t, newSource(img))
	mp := mountDir(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = f.Mount(context.Background(), mp, img.criLabels()) })
	}
	wg.Wait()
	var ok int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errdefs.ErrAlreadyExists):
			t.Errorf("concurrent mount: %v, want nil or ErrAlreadyExists", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent mounts succeeded, want 1", ok)
	}
	checkTree(t, mp, img.entries)
}

// TestCheckReresolves: while the registry answers, Check trusts recent
// contact; a read that fails while the registry is down makes Check probe
// and fail; once the registry is back Check re-resolves the blob and reads
// work again through the same mount.
func TestCheckReresolves(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/outage")
	metrics := prometheus.NewRegistry()
	f := newFS(t, newSource(img), WithCheck(time.Hour, 5*time.Second), WithRegisterer(metrics))
	mp := mountDir(t)
	ctx := context.Background()
	if err := f.Mount(ctx, mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	if got, err := readFile(mp, "etc/hello.txt"); err != nil || len(got) == 0 {
		t.Fatalf("read before the outage: %q, %v", got, err)
	}
	if err := f.Check(ctx, mp, img.criLabels()); err != nil {
		t.Fatalf("check while the registry answers: %v", err)
	}
	if n := testutil.ToFloat64(f.met.checks.WithLabelValues(checkRecent)); n != 1 {
		t.Errorf("checks without a probe = %v, want 1 (the registry answered recently)", n)
	}

	reg.Stop()
	if _, err := readFile(mp, "usr/share/data.bin"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read during the outage: %v, want EIO", err)
	}
	if err := f.Check(ctx, mp, img.criLabels()); err == nil {
		t.Fatal("check during the outage succeeded")
	}
	st, _ := f.Status(mp)
	if st.LastError == nil {
		t.Error("status during the outage shows no registry error")
	}

	reg.Restart()
	if err := f.Check(ctx, mp, img.criLabels()); err != nil {
		t.Fatalf("check after the registry came back: %v", err)
	}
	checkTree(t, mp, img.entries)
	if st, _ := f.Status(mp); st.LastError != nil {
		t.Errorf("status after recovery still shows %v", st.LastError)
	}
}

// TestCheckAlwaysProbes: with a zero interval every Check reaches the
// registry, so an outage shows even without a failed read.
func TestCheckAlwaysProbes(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/probe")
	f := newFS(t, newSource(img), WithCheck(0, 5*time.Second))
	mp := mountDir(t)
	ctx := context.Background()
	if err := f.Mount(ctx, mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	reg.Stop()
	if err := f.Check(ctx, mp, img.criLabels()); err == nil {
		t.Fatal("check with the registry stopped succeeded")
	}
	// No read failed: the failed probe itself is the registry error shown.
	if st, _ := f.Status(mp); st.LastError == nil {
		t.Error("status after a failed probe shows no registry error")
	}
	reg.Restart()
	if err := f.Check(ctx, mp, img.criLabels()); err != nil {
		t.Fatalf("check after restart: %v", err)
	}
	if st, _ := f.Status(mp); st.LastError != nil {
		t.Errorf("status after a successful probe still shows %v", st.LastError)
	}
}

// TestBackgroundCompletes: with background fetch on, a mounted layer
// becomes complete without being read, and is then served with the
// registry gone; Check does not need the registry either.
func TestBackgroundCompletes(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/bg")
	f := newFS(t, newSource(img), WithCheck(0, 5*time.Second),
		WithBackgroundFetch(bgfetch.Options{QuietPeriod: time.Millisecond, RetryDelay: 50 * time.Millisecond}))
	mp := mountImage(t, f, img)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := f.Status(mp)
		if err != nil {
			t.Fatal(err)
		}
		if st.Complete {
			if st.Fetched != st.Total || st.Failed != nil {
				t.Fatalf("complete layer with status %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("layer not complete after 30s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	reg.Stop()
	if err := f.Check(context.Background(), mp, img.criLabels()); err != nil {
		t.Fatalf("check of a complete layer with the registry gone: %v", err)
	}
	checkTree(t, mp, img.entries)
}

// TestCloseUnmountsAll: Close unmounts every layer and refuses new
// mounts.
func TestCloseUnmountsAll(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/close")
	f, err := New(t.TempDir(), newSource(img), remoteBlobs())
	if err != nil {
		t.Fatal(err)
	}
	mps := []string{mountDir(t), mountDir(t)}
	for _, mp := range mps {
		if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
			t.Fatal(err)
		}
	}
	// An open file keeps one mount busy: Close must still not hang.
	fh, err := os.Open(mps[1] + "/etc/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, mp := range mps {
		if isMounted(t, mp) {
			t.Errorf("%s still mounted after Close", mp)
		}
	}
	if err := f.Mount(context.Background(), mountDir(t), img.criLabels()); !errors.Is(err, ErrClosed) {
		t.Fatalf("mount after close: %v, want ErrClosed", err)
	}
}

// TestUnmountStale: an FS releases an ociseek mount it did not make (left
// by a previous run), and refuses to touch anything else.
func TestUnmountStale(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/stale")
	old := newFS(t, newSource(img))
	mp := mountDir(t)
	if err := old.Mount(context.Background(), mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	f := newFS(t, newSource(img))
	if err := f.Unmount(context.Background(), mp); err != nil {
		t.Fatalf("unmount of a previous run's mount: %v", err)
	}
	if isMounted(t, mp) {
		t.Fatal("stale mount still there")
	}
	if err := f.Unmount(context.Background(), mp); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unmount of a plain directory: %v, want ErrNotFound", err)
	}
	if err := f.Unmount(context.Background(), "/proc"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unmount of a foreign mount: %v, want ErrNotFound", err)
	}
}

// countingOpener counts the blob opens of a BlobOpener.
type countingOpener struct {
	BlobOpener
	opens atomic.Int64
}

func (c *countingOpener) OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error) {
	c.opens.Add(1)
	return c.BlobOpener.OpenBlob(ctx, l)
}

// TestCheckSwapsBlob: a Check after a registry outage opens the blob anew
// (re-resolution) rather than trusting the old connection.
func TestCheckSwapsBlob(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushImage(t, reg, "lazy/swap")
	opener := &countingOpener{BlobOpener: remoteBlobs()}
	f, err := New(t.TempDir(), newSource(img), opener, WithCheck(time.Hour, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mp := mountDir(t)
	ctx := context.Background()
	if err := f.Mount(ctx, mp, img.criLabels()); err != nil {
		t.Fatal(err)
	}
	reg.Restart()
	if _, err := readFile(mp, "usr/bin/tool"); err != nil {
		t.Fatalf("read across a registry restart: %v", err)
	}
	if err := f.Check(ctx, mp, nil); err != nil || opener.opens.Load() != 1 {
		t.Fatalf("check after successful reads: %v with %d opens, want nil and no new open", err, opener.opens.Load())
	}
	reg.Stop()
	if _, err := readFile(mp, "usr/share/data.bin"); err == nil {
		t.Fatal("read of unfetched bytes with the registry down succeeded")
	}
	reg.Restart()
	if err := f.Check(ctx, mp, nil); err != nil {
		t.Fatal(err)
	}
	if n := opener.opens.Load(); n != 2 {
		t.Fatalf("blob opened %d times, want 2 (mount, re-resolution)", n)
	}
}

// TestVerificationFailureIsFinal: bytes that do not match the zTOC's span
// digest are never served; the layer fails, Status says why, and Check
// reports it unusable without hoping the registry will fix it.
func TestVerificationFailureIsFinal(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/tampered")
	z := *img.ztoc
	z.SpanDigests = slices.Clone(z.SpanDigests)
	z.SpanDigests[0] = digest.FromString("not span 0")
	src := newSource(img)
	src.ztocs[img.ref.LayerDigest] = &z
	f := newFS(t, src, WithCheck(0, 5*time.Second))
	mp := mountImage(t, f, img)
	if _, err := readFile(mp, "etc/hello.txt"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a tampered span: %v, want EIO", err)
	}
	st, _ := f.Status(mp)
	if !errors.Is(st.Failed, span.ErrLayerFailed) {
		t.Errorf("status Failed = %v, want ErrLayerFailed", st.Failed)
	}
	if err := f.Check(context.Background(), mp, nil); !errors.Is(err, span.ErrLayerFailed) {
		t.Fatalf("check of a failed layer: %v, want ErrLayerFailed", err)
	}
}

// peakOpener records the most range streams open at once over all blobs.
type peakOpener struct {
	BlobOpener
	mu           sync.Mutex
	active, peak int
}

func (p *peakOpener) OpenBlob(ctx context.Context, l LayerRef) (span.BlobReader, error) {
	r, err := p.BlobOpener.OpenBlob(ctx, l)
	if err != nil {
		return nil, err
	}
	return peakReader{r, p}, nil
}

type peakReader struct {
	span.BlobReader
	p *peakOpener
}

func (r peakReader) FetchRange(ctx context.Context, start, end int64) (io.ReadCloser, error) {
	rc, err := r.BlobReader.FetchRange(ctx, start, end)
	if err != nil {
		return nil, err
	}
	r.p.mu.Lock()
	r.p.active++
	r.p.peak = max(r.p.peak, r.p.active)
	r.p.mu.Unlock()
	// A slow registry: streams stay open long enough to overlap whenever
	// nothing stops them.
	time.Sleep(20 * time.Millisecond)
	return peakStream{rc, r.p}, nil
}

type peakStream struct {
	io.ReadCloser
	p *peakOpener
}

func (s peakStream) Close() error {
	s.p.mu.Lock()
	s.p.active--
	s.p.mu.Unlock()
	return s.ReadCloser.Close()
}

// TestMaxFetches: with a common bound of 2 range requests, reads of two
// layers at many offsets at once never have more open, and all succeed.
// Without the bound the same reads open more (checked, so the test can
// tell).
func TestMaxFetches(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	imgs := []*image{pushImage(t, reg, "lazy/max1"), pushImage(t, reg, "lazy/max2")}
	for _, limit := range []int{0, 2} {
		opener := &peakOpener{BlobOpener: remoteBlobs()}
		f, err := New(t.TempDir(), newSource(imgs...), opener, WithMaxFetches(limit))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, img := range imgs {
			mp := mountDir(t)
			if err := f.Mount(context.Background(), mp, img.criLabels()); err != nil {
				t.Fatal(err)
			}
			for _, e := range img.entries {
				for off := 0; off < len(e.Body); off += 64 << 10 {
					wg.Go(func() { readAt(t, filepath.Join(mp, e.Name), e.Body, off) })
				}
			}
		}
		wg.Wait()
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		switch {
		case limit == 0 && opener.peak <= 2:
			t.Fatalf("without a bound at most %d range requests were open at once; the test cannot tell", opener.peak)
		case limit > 0 && opener.peak > limit:
			t.Fatalf("peak open range requests %d, want at most %d", opener.peak, limit)
		}
	}
}

// readAt reads 4 KiB of the file at path at off and compares with want.
func readAt(t *testing.T, path string, want []byte, off int) {
	fh, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer fh.Close()
	buf := make([]byte, min(4096, len(want)-off))
	if _, err := fh.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, want[off:off+len(buf)]) {
		t.Errorf("read %s at %d: %v (or bytes differ)", path, off, err)
	}
}

// TestDetachKeepsMounts: Detach (a daemon's SIGTERM) stops the FS but leaves
// its mounts for the next start to take over; a later FS releases them.
func TestDetachKeepsMounts(t *testing.T) {
	t.Parallel()
	img := pushImage(t, regtest.Start(t, regtest.KindDistribution), "lazy/detach")
	f, err := New(t.TempDir(), newSource(img), remoteBlobs())
	if err != nil {
		t.Fatal(err)
	}
	mp := mountImage(t, f, img)
	if err := f.Detach(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if !isMounted(t, mp) {
		t.Fatal("detach unmounted the layer; the next start could not take it over")
	}
	if err := f.Mount(context.Background(), mountDir(t), img.criLabels()); !errors.Is(err, ErrClosed) {
		t.Fatalf("mount after detach: %v, want ErrClosed", err)
	}
	next := newFS(t, newSource(img))
	if err := next.Unmount(context.Background(), mp); err != nil {
		t.Fatalf("next start releasing the detached mount: %v", err)
	}
	if isMounted(t, mp) {
		t.Fatal("detached mount still there after the next FS released it")
	}
}
