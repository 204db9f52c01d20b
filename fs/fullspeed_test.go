package fs

import (
	"archive/tar"
	"fmt"
	"testing"
	"time"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// fullSpeedOptions completes layers with the full-speed policy; the quiet
// period of the idle policy is an hour, to show it plays no part.
func fullSpeedOptions() Opt {
	return WithBackgroundFetch(bgfetch.Options{Policy: bgfetch.PolicyFullSpeed, QuietPeriod: time.Hour,
		MaxDeferral: time.Hour, RetryDelay: 50 * time.Millisecond})
}

// bigFileEntries are n files of size bytes (content that compresses about
// 2:1) in data/.
func bigFileEntries(n, size int) []ztoctest.File {
	entries := make([]ztoctest.File, n)
	for i := range entries {
		entries[i] = ztoctest.File{Name: fmt.Sprintf("data/f%04d", i), Type: tar.TypeReg, Mode: 0o644,
			Body: ztoctest.Content(uint64(i), size)}
	}
	return entries
}

// TestFullSpeedMountCompletes: with the full-speed policy a mounted layer
// of several completion chunks is fetched, verified and switched to
// passthrough with no read at all, its files then read right with the
// registry gone.
func TestFullSpeedMountCompletes(t *testing.T) {
	t.Parallel()
	reg := regtest.Start(t, regtest.KindDistribution)
	img := pushEntries(t, reg, "lazy/fullspeed", bigFileEntries(6, 2<<20), 1<<20)
	root := t.TempDir()
	f := newRootFS(t, root, newSource(img), fullSpeedOptions())
	mp := mountImage(t, f, img)
	waitComplete(t, f, mp)
	st, err := f.Status(mp)
	if err != nil || st.Fetched != st.Total || st.Background != nil {
		t.Fatalf("status after completion: %+v, %v", st, err)
	}
	reg.Stop()
	checkTree(t, mp, img.entries)
	if got := copies(t, root); len(got) != len(img.entries) {
		t.Errorf("%d passthrough copies after reading every file, want %d", len(got), len(img.entries))
	}
	checkKernelReadsCopy(t, root, mp, tocEntry(t, img.ztoc, "data/f0003"))
}
