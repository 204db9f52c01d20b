package fs

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/ociseek/ociseek/fs/bgfetch"
	"github.com/ociseek/ociseek/fs/span"
	"github.com/ociseek/ociseek/internal/regtest"
	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// loadReaders is how many processes' worth of readers hit one layer at once
// in TestConcurrentReadersOneLayer.
const loadReaders = 64

// watchdog turns a hang into a failure that shows where everything is
// stuck: after d (or shortly before the test binary's own deadline) it
// writes every goroutine's stack to stderr, aborts the FUSE connections of
// the mounts it guards and panics. A deadlock must not pass as a slow run,
// and a timing assertion would fail on a busy machine instead. The abort
// matters: readers blocked in requests to this process's own FUSE server
// keep it from exiting (the kernel waits for the answers, which only the
// exiting process could give), so a bare panic wedges the test binary.
type watchdog struct {
	mu     sync.Mutex
	mounts []string
}

func startWatchdog(t *testing.T, d time.Duration) *watchdog {
	t.Helper()
	if dl, ok := t.Deadline(); ok {
		d = min(d, time.Until(dl)-10*time.Second)
	}
	w := &watchdog{}
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 16<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s still running after %v (deadlock?); goroutines:\n%s\n", name, d, buf)
		w.mu.Lock()
		for _, mp := range w.mounts {
			if err := abortFUSE(mp); err != nil {
				fmt.Fprintf(os.Stderr, "watchdog: %v\n", err)
			}
		}
		w.mu.Unlock()
		panic(fmt.Sprintf("%s still running after %v; goroutine stacks above", name, d))
	})
	t.Cleanup(func() { timer.Stop() })
	return w
}

// guard adds a FUSE mountpoint to abort when the watchdog fires.
func (w *watchdog) guard(mp string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mounts = append(w.mounts, mp)
}

// abortFUSE aborts the FUSE connection mounted on mp through the fusectl
// file system (mounting it if needed), failing every pending request. It
// looks the device up in the mount table: a stat of mp would hang.
func abortFUSE(mp string) error {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil || len(ms) == 0 {
		return fmt.Errorf("abort FUSE at %s: not in the mount table (%v)", mp, err)
	}
	const ctl = "/sys/fs/fuse/connections"
	if names, _ := os.ReadDir(ctl); len(names) == 0 {
		if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("abort FUSE at %s: mount fusectl: %w", mp, err)
		}
	}
	abort := filepath.Join(ctl, fmt.Sprint(ms[len(ms)-1].Minor), "abort")
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		return fmt.Errorf("abort FUSE at %s: %w", mp, err)
	}
	return nil
}

// loadEntries is a layer of several multi-span files and many small ones,
// so that concurrent readers meet in shared spans, cross span boundaries
// and read neighbouring small files out of one span.
func loadEntries() []ztoctest.File {
	files := []ztoctest.File{{Name: "big/", Type: tar.TypeDir, Mode: 0o755}, {Name: "small/", Type: tar.TypeDir, Mode: 0o755}}
	for i := range 6 {
		files = append(files, ztoctest.File{Name: fmt.Sprintf("big/f%d", i), Type: tar.TypeReg, Mode: 0o644,
			Body: ztoctest.Content(uint64(100+i), (150+i*70)<<10)})
	}
	for i := range 24 {
		files = append(files, ztoctest.File{Name: fmt.Sprintf("small/f%02d", i), Type: tar.TypeReg, Mode: 0o644,
			Body: ztoctest.Content(uint64(200+i), 700+i*811)})
	}
	return files
}

// readPattern reads the whole of the file at path in one of three ways,
// chosen by the reader's number: io.ReadAll, preads of odd sizes from the
// end backwards, or preads hopping from the middle outwards.
func readPattern(path string, size int, reader int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if reader%3 == 0 {
		return io.ReadAll(f)
	}
	out := make([]byte, size)
	chunk := 4096*(reader%5) + 1000 + reader
	var offs []int
	for off := 0; off < size; off += chunk {
		offs = append(offs, off)
	}
	if reader%3 == 1 {
		for i, j := 0, len(offs)-1; i < j; i, j = i+1, j-1 {
			offs[i], offs[j] = offs[j], offs[i]
		}
	} else {
		mid := len(offs) / 2
		offs = append(offs[mid:], offs[:mid]...)
	}
	for _, off := range offs {
		end := min(off+chunk, size)
		if n, err := f.ReadAt(out[off:end], int64(off)); n != end-off {
			return nil, fmt.Errorf("pread [%d,%d): %d bytes, %w", off, end, n, err)
		}
	}
	return out, nil
}

// TestConcurrentReadersOneLayer: 64 readers start at once on a freshly
// mounted (nothing fetched) layer, each reading every file in its own order
// and pattern through the FUSE mount. Every reader must get the tar's bytes
// and the layer must not fail; a deadlock trips the watchdog. Run with
// GOMAXPROCS=1 too (make test does), where a reader that holds a lock
// while it waits cannot be rescued by another core.
func TestConcurrentReadersOneLayer(t *testing.T) {
	wd := startWatchdog(t, 3*time.Minute)
	reg := regtest.Start(t, regtest.KindDistribution)
	cases := []struct {
		name string
		opts []Opt
	}{
		{"strict", nil},
		{"deferred", []Opt{WithSpanOptions(span.Options{Verify: span.VerifyDeferred})}},
		// Few fetch slots, one span kept in memory, the background pass
		// running alongside: readers queue for slots and buffers are
		// recycled all the time.
		{"tight", []Opt{
			WithSpanOptions(span.Options{Verify: span.VerifyDeferred, MaxParallel: 2, FetchAhead: 1, HotSpans: 1}),
			WithMaxFetches(3),
			WithBackgroundFetch(bgfetch.Options{QuietPeriod: time.Millisecond, RetryDelay: 50 * time.Millisecond}),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := pushEntries(t, reg, "load/"+c.name, loadEntries(), 64<<10)
			f := newFS(t, newSource(img), c.opts...)
			mp := mountImage(t, f, img)
			wd.guard(mp)
			var regular []ztoctest.File
			for _, e := range img.entries {
				if e.Type == tar.TypeReg {
					regular = append(regular, e)
				}
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := range loadReaders {
				wg.Go(func() {
					<-start
					for i := range regular {
						e := regular[(g*7+i)%len(regular)]
						got, err := readPattern(filepath.Join(mp, e.Name), len(e.Body), g)
						if err != nil || !bytes.Equal(got, e.Body) {
							t.Errorf("reader %d, %s: err=%v, %d bytes, equal=%v", g, e.Name, err, len(got), bytes.Equal(got, e.Body))
							return
						}
					}
				})
			}
			began := time.Now()
			close(start)
			wg.Wait()
			t.Logf("%d readers read %d files each in %v", loadReaders, len(regular), time.Since(began).Round(time.Millisecond))
			st, err := f.Status(mp)
			if err != nil {
				t.Fatal(err)
			}
			if st.Failed != nil {
				t.Fatalf("layer failed under load: %v", st.Failed)
			}
		})
	}
}
