package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociseek/ociseek/ztoc"
)

// switchedLocal offers the file's local copy only while on is set, and
// counts what the layer asked and told it. The copy differs from the
// tar in its first byte ('J'), so a read shows which path served it:
// through this process (the tar's byte) or by passthrough (the copy's).
type switchedLocal struct {
	memReader
	path  string
	on    atomic.Bool
	asked atomic.Int64 // LocalFile calls

	mu     sync.Mutex
	opened map[bool]int // Opened calls, by passthrough
}

func (s *switchedLocal) LocalFile(ctx context.Context, e *ztoc.FileMetadata) (*os.File, bool) {
	s.asked.Add(1)
	if !s.on.Load() {
		return nil, false
	}
	f, err := os.Open(s.path)
	return f, err == nil
}

func (s *switchedLocal) Opened(e *ztoc.FileMetadata, passthrough bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened[passthrough]++
}

func (s *switchedLocal) opens() (fuse, local int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened[false], s.opened[true]
}

// switchedMount mounts a layer holding one file "f" whose bytes start
// with 'T', served by a switchedLocal (off), and returns the file's path.
func switchedMount(t *testing.T) (*switchedLocal, string) {
	body := "T" + strings.Repeat("tar bytes ", 20000)
	tb := makeTar(t, []tarEntry{{name: "f", typ: tar.TypeReg, mode: 0o644, body: body}})
	s := &switchedLocal{memReader: newMemReader(tb), path: filepath.Join(t.TempDir(), "f"), opened: map[bool]int{}}
	if err := os.WriteFile(s.path, []byte("J"+body[1:]), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, filepath.Join(mountTree(t, tocFromTar(t, tb), s, Options{}), "f")
}

// firstByte reads byte 0 of the open file f, failing the test on error
// (an EIO here is the kernel refusing a mixed open).
func firstByte(t *testing.T, f *os.File) byte {
	t.Helper()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatalf("read %s: %v", f.Name(), err)
	}
	return b[0]
}

// openFile opens path, failing the test on error.
func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return f
}

// awaitPassthrough opens path until an open is served by passthrough
// (the kernel sends RELEASE after close(2) returns, so the layer may
// still count a closed handle for a moment) and returns that open.
func awaitPassthrough(t *testing.T, path string) *os.File {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		f := openFile(t, path)
		if firstByte(t, f) == 'J' {
			return f
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatal("no open served by passthrough after every other handle closed")
		}
		time.Sleep(2 * passthroughSettle) // a FUSE-mode close defers passthrough
	}
}

// TestPassthroughJoinsOpenKind: a new open of a file joins the kind of
// the file's open handles, since the kernel fails (EIO) an open that
// mixes passthrough and FUSE on one inode. With a FUSE handle open the
// local copy is not even asked for; once every handle is closed, the
// next open is served by passthrough; while a passthrough handle is open,
// new opens are too, even when the Reader no longer offers a copy.
func TestPassthroughJoinsOpenKind(t *testing.T) {
	s, path := switchedMount(t)
	early := openFile(t, path) // no copy yet: FUSE
	defer early.Close()
	if b := firstByte(t, early); b != 'T' {
		t.Fatalf("first open read %q, want the tar's 'T'", b)
	}
	s.on.Store(true)
	asked := s.asked.Load()
	second := openFile(t, path)
	if b := firstByte(t, second); b != 'T' {
		t.Errorf("open next to a FUSE handle read %q, want 'T' (through FUSE)", b)
	}
	if got := s.asked.Load(); got != asked {
		t.Errorf("LocalFile asked %d times while a FUSE handle was open", got-asked)
	}
	early.Close()
	second.Close()

	held := awaitPassthrough(t, path)
	defer held.Close()
	s.on.Store(false)
	asked = s.asked.Load()
	for range 3 {
		f := openFile(t, path)
		if b := firstByte(t, f); b != 'J' {
			t.Errorf("open next to a passthrough handle read %q, want 'J' (passthrough)", b)
		}
		f.Close()
	}
	if got := s.asked.Load(); got != asked {
		t.Errorf("LocalFile asked %d times while a passthrough handle was open", got-asked)
	}
	if fuse, local := s.opens(); fuse < 2 || local < 4 {
		t.Errorf("Opened told of %d FUSE and %d passthrough opens, want at least 2 and 4", fuse, local)
	}
}

// TestPassthroughMixedOpensConcurrent opens, reads and closes one file
// from many goroutines while the Reader's copy comes and goes, no open or
// read failing (the kernel would answer a mixed open with EIO): next to a
// held passthrough handle, every open is served by passthrough; next to a
// held FUSE handle, every open is served through FUSE; with none held,
// each read shows one of the two versions. Then, all closed and the copy
// offered, an open is served by passthrough: the counts ended balanced.
func TestPassthroughMixedOpensConcurrent(t *testing.T) {
	s, path := switchedMount(t)
	const workers, opens = 8, 100
	hammer := func(want byte) {
		stop := make(chan struct{})
		var toggler, wg sync.WaitGroup
		toggler.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
					s.on.Store(i%2 == 0)
				}
			}
		})
		for w := range workers {
			wg.Go(func() { hammerFile(t, path, opens, want, w) })
		}
		wg.Wait()
		close(stop)
		toggler.Wait()
	}
	s.on.Store(true)
	held := awaitPassthrough(t, path)
	hammer('J')
	held.Close()

	s.on.Store(false)
	held = awaitFUSE(t, path)
	hammer('T')
	held.Close()

	hammer(0)
	fuse, local := s.opens()
	t.Logf("opens: %d FUSE, %d passthrough", fuse, local)
	s.on.Store(true)
	awaitPassthrough(t, path).Close()
}

// hammerFile opens path n times, reading the first 4 KiB each time:
// byte 0 must be want ('J' passthrough, 'T' FUSE, 0 either).
func hammerFile(t *testing.T, path string, n int, want byte, worker int) {
	b := make([]byte, 4096)
	for range n {
		f, err := os.Open(path)
		if err != nil {
			t.Errorf("worker %d: open: %v", worker, err)
			return
		}
		got, err := f.ReadAt(b, 0)
		f.Close()
		if err != nil || !bytes.Equal(b[1:11], []byte("tar bytes ")) {
			t.Errorf("worker %d: read: %d bytes starting %q, %v", worker, got, b[:min(got, 11)], err)
			return
		}
		if b[0] != 'T' && b[0] != 'J' || want != 0 && b[0] != want {
			t.Errorf("worker %d: read %q first, want %q", worker, b[0], want)
			return
		}
	}
}

// awaitFUSE is awaitPassthrough for an open served through FUSE.
func awaitFUSE(t *testing.T, path string) *os.File {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		f := openFile(t, path)
		if firstByte(t, f) == 'T' {
			return f
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatal("no open served through FUSE after every other handle closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
