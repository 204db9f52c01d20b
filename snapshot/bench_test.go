package snapshot

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/ociseek/ociseek/index"
	"github.com/sirupsen/logrus"
)

// BenchmarkUnpackPrepare measures what the decision adds to a layer
// unpack, against a plain Prepare measured in the same run:
//   - overlay: an unindexed image's layer (Mount says ErrNoIndex; the
//     decision is recorded on the active snapshot);
//   - lazy: a mounted layer, committed by the snapshotter (bind mount as
//     the FileSystem, so the figure is the snapshotter's own cost).
//
// Reported: ns per Prepare for each, and overlay/lazy as ratios to plain.
func BenchmarkUnpackPrepare(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(quiet))
	run := func(fsys FileSystem, unpack bool) time.Duration {
		sn, err := New(ctx, b.TempDir(), fsys)
		if err != nil {
			b.Fatal(err)
		}
		defer sn.Close()
		defer sn.UnmountAll(ctx)
		start := time.Now()
		for i := 0; i < b.N; i++ {
			var opts []snapshots.Opt
			if unpack {
				opts = append(opts, snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: fmt.Sprint("layer-", i)}))
			}
			if _, err := sn.Prepare(ctx, fmt.Sprint("key-", i), "", opts...); err != nil && !errdefs.IsAlreadyExists(err) {
				b.Fatal(err)
			}
		}
		return time.Since(start) / time.Duration(b.N)
	}
	src := b.TempDir()
	plain := run(failingFS{}, false)
	overlay := run(&bindFS{src: src, mountErr: index.ErrNoIndex, mounts: map[string]map[string]string{}}, true)
	lazy := run(&bindFS{src: src, mounts: map[string]map[string]string{}}, true)
	b.ReportMetric(float64(plain.Nanoseconds()), "plain-ns/op")
	b.ReportMetric(float64(overlay)/float64(plain), "overlay/plain")
	b.ReportMetric(float64(lazy)/float64(plain), "lazy/plain")
}
