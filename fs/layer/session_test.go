package layer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// adoptChildEnv names the mountpoint TestAdoptChild serves; set only in the
// child process TestAdoptAfterKill starts.
const adoptChildEnv = "OCISEEK_LAYER_ADOPT_CHILD"

// adoptLayer is the layer both processes serve: small files read one after
// the other, and a big file read sequentially.
func adoptLayer(t testing.TB) (tarBytes []byte, small map[string][]byte, big []byte) {
	rng := rand.New(rand.NewPCG(1, 2))
	big = make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	small = map[string][]byte{}
	es := []tarEntry{{name: "small/", typ: '5', mode: 0o755}}
	for i := range 32 {
		name := fmt.Sprintf("small/f%02d", i)
		small[name] = []byte(fmt.Sprintf("small file %d %s", i, bytes.Repeat([]byte{'x'}, i*100)))
		es = append(es, tarEntry{name: name, typ: '0', mode: 0o644, body: string(small[name])})
	}
	es = append(es, tarEntry{name: "big", typ: '0', mode: 0o644, body: string(big)})
	return makeTar(t, es), small, big
}

// slowReader delays every read, so that a killed server dies with
// requests in flight.
type slowMemReader struct {
	memReader
	delay time.Duration
}

func (r slowMemReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	time.Sleep(r.delay)
	return r.memReader.ReadAt(ctx, p, off)
}

// TestAdoptChild is the first server of TestAdoptAfterKill, run in a
// child process: it mounts the layer and hands the connection (fd and
// Handoff) to its parent over fd 3, then serves until it is killed.
func TestAdoptChild(t *testing.T) {
	mnt := os.Getenv(adoptChildEnv)
	if mnt == "" {
		t.Skip("the child process of TestAdoptAfterKill")
	}
	tb, _, _ := adoptLayer(t)
	root, err := New(tocFromTar(t, tb), slowMemReader{newMemReader(tb), 3 * time.Millisecond}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Mount(mnt, root, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := json.Marshal(s.Handoff())
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(3, h, unix.UnixRights(int(s.Device().Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	select {} // serve until killed
}

// startFirstServer starts TestAdoptChild serving a mount at mnt and
// returns it with the connection it handed over.
func startFirstServer(t *testing.T, mnt string) (*exec.Cmd, *os.File, Handoff) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "parent"), os.NewFile(uintptr(pair[1]), "child")
	defer ours.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAdoptChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), adoptChildEnv+"="+mnt)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	})
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, 0)
	if err != nil || n == 0 {
		t.Fatalf("receive the connection from the first server: %d bytes, %v", n, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("fds: %v %v", fds, err)
	}
	var h Handoff
	if err := json.Unmarshal(buf[:n], &h); err != nil {
		t.Fatal(err)
	}
	return cmd, os.NewFile(uintptr(fds[0]), "/dev/fuse"), h
}

// readLoops reads the layer until stop is closed: every small file in
// turn (a new open each time, its pages dropped after), and the big file
// sequentially through one handle opened before the server changes. It
// reports the first wrong byte or error and the longest single read.
type readLoops struct {
	mu        sync.Mutex
	err       error
	longest   time.Duration
	smallRead int
	bigPasses int
}

func (l *readLoops) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *readLoops) took(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.longest = max(l.longest, d)
}

func (l *readLoops) run(mnt string, small map[string][]byte, big []byte, stop <-chan struct{}, wg *sync.WaitGroup) {
	bf, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		l.fail(err)
		return
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("small/f%02d", i%len(small))
			start := time.Now()
			got, err := readDropped(filepath.Join(mnt, name))
			l.took(time.Since(start))
			if err != nil || !bytes.Equal(got, small[name]) {
				l.fail(fmt.Errorf("read %s: %q, %v", name, got, err))
				return
			}
			l.mu.Lock()
			l.smallRead++
			l.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		defer bf.Close()
		want := sha256.Sum256(big)
		buf := make([]byte, 256<<10)
		for {
			h := sha256.New()
			for off := int64(0); off < int64(len(big)); {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				n, err := bf.ReadAt(buf, off)
				l.took(time.Since(start))
				if n == 0 && err != nil {
					l.fail(fmt.Errorf("read big at %d: %w", off, err))
					return
				}
				h.Write(buf[:n])
				off += int64(n)
			}
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				l.fail(errors.New("big file: checksum differs"))
				return
			}
			_ = unix.Fadvise(int(bf.Fd()), 0, 0, unix.FADV_DONTNEED)
			l.mu.Lock()
			l.bigPasses++
			l.mu.Unlock()
		}
	}()
}

// readDropped reads a file and drops its pages, so the next read asks the
// server again.
func readDropped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, err
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return b.Bytes(), nil
}

// TestAdoptAfterKill kills the process serving a layer (SIGKILL, with
// reads in flight) and adopts its connection in this process: the readers
// see no error and every byte right, through the handles and node IDs the
// first server gave out; reads in flight at the kill are resent.
func TestAdoptAfterKill(t *testing.T) {
	requireFUSE(t)
	if os.Getenv(adoptChildEnv) != "" {
		t.Skip("in the child")
	}
	tb, small, big := adoptLayer(t)
	mnt := t.TempDir()
	cmd, dev, h := startFirstServer(t, mnt)
	if h.Epoch != firstEpoch || h.Init.Major != 7 {
		t.Fatalf("hand-off %+v: want epoch %d and FUSE 7.x", h, firstEpoch)
	}

	var loops readLoops
	stop, wg := make(chan struct{}), &sync.WaitGroup{}
	loops.run(mnt, small, big, stop, wg)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(300 * time.Millisecond)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	time.Sleep(50 * time.Millisecond) // reads queue while nobody serves

	root, err := New(tocFromTar(t, tb), newMemReader(tb), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Adopt(mnt, dev, h, root, MountOptions{})
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if s.Handoff().Epoch != firstEpoch+1 {
		t.Errorf("adopted epoch %d, want %d", s.Handoff().Epoch, firstEpoch+1)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if loops.err != nil {
		t.Fatalf("reader across the hand-off: %v", loops.err)
	}
	if loops.smallRead < 10 || loops.bigPasses < 1 {
		t.Errorf("readers made too little progress: %d small reads, %d big passes", loops.smallRead, loops.bigPasses)
	}
	t.Logf("longest read across a SIGKILL and adoption: %v (%d small reads, %d big passes)",
		loops.longest, loops.smallRead, loops.bigPasses)
	if err := s.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
}

// TestFailAfterKill: a connection nobody can serve again answers EIO, to
// reads of a file opened before its server died and to new lookups,
// instead of leaving its readers waiting.
func TestFailAfterKill(t *testing.T) {
	requireFUSE(t)
	if os.Getenv(adoptChildEnv) != "" {
		t.Skip("in the child")
	}
	mnt := t.TempDir()
	cmd, dev, _ := startFirstServer(t, mnt)
	f, err := os.Open(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := Fail(dev); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	done := make(chan error, 2)
	go func() {
		_, err := f.ReadAt(make([]byte, 4096), 1<<20)
		done <- err
	}()
	go func() {
		_, err := os.ReadFile(filepath.Join(mnt, "small", "f03"))
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("read on a failed connection: %v, want EIO", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("read on a failed connection still waiting after 5 s")
		}
	}
}
