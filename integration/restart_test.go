package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// restartData has the 64 MiB file the running container reads end to end,
// and small files it reads one every 10 ms.
var restartData = harness.DataParams{Seed: 13, RandomBytes: 64 << 20, RandomFileBytes: 64 << 20, TextBytes: 1 << 20, SmallFiles: 600}

// restartLoops is the running container's workload: a different small file
// every 10 ms, and the 64 MiB file read and checksummed over and over; any
// failure is written to /tmp/errors; the container then waits, so that
// the test can read what they wrote. Busybox is in a layer too small to be
// lazy, so the loops' own binaries are local (this busybox has no touch or
// find: the shell's redirection and globs stand in).
const restartLoops = `
(while [ ! -e /tmp/stop ]; do
  for f in /data/small/*/*; do
    [ -e /tmp/stop ] && break
    cat "$f" > /dev/null || echo "small $f" >> /tmp/errors
    sleep 0.01
  done
done; : > /tmp/small.done) &
(while [ ! -e /tmp/stop ]; do
  s=$(md5sum /data/random/blob-000) || echo "big: md5sum failed" >> /tmp/errors
  echo "${s%% *}" >> /tmp/sums
done; : > /tmp/big.done) &
wait
exec sleep 3600
`

// TestRunningContainerSurvivesDaemonRestarts: a container reads its lazy
// layer in a loop while the daemon is restarted (SIGTERM, start), upgraded
// (SIGTERM, a second build started on the same state) and crashes
// (SIGKILL, start). The new daemon takes the FUSE connections over from the
// fd holder, so the loops see no error and every checksum is right; a new
// container starts as well. A reader on the host measures the longest read
// in each path (the figures of docs/benchmarks.md, "Restarts").
func TestRunningContainerSurvivesDaemonRestarts(t *testing.T) {
	ctx := testContext(t)
	img := testImage(t, restartData)
	want := md5Of(t, img.Layers[1].Blob, "data/random/blob-000")
	upgraded := buildUpgrade(t)
	reg := regtest.Start(t, regtest.KindDistribution)
	_, ref := lazyImage(t, reg, img, "restart", indexV1, indexFlags)
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	if _, err := env.Pull(ctx, ref); err != nil {
		t.Fatal(err)
	}
	c := env.Containerd
	// A fresh name: runc's state directory is shared by every containerd
	// of the machine, and a killed run may have left "running" there.
	id := fmt.Sprintf("running-%d", time.Now().UnixNano()%1000000)
	if _, err := c.Ctr(ctx, "run", "-d", "--snapshotter", "soci", ref, id, "sh", "-c", restartLoops); err != nil {
		t.Fatal(err)
	}
	waitInContainer(ctx, t, c, id, "test -s /tmp/sums", "the first checksum of the 64 MiB file")
	host := startHostReader(t, env)

	phases := []struct {
		name string
		do   func()
	}{
		{"restart (SIGTERM, start)", func() {
			if err := env.Daemon.Stop(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			env.Daemon.Restart(t)
		}},
		{"upgrade (SIGTERM, another build)", func() {
			if err := env.Daemon.Stop(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			env.Daemon.RestartWith(t, upgraded)
		}},
		{"crash (SIGKILL, start)", func() {
			env.Daemon.Kill(t)
			env.Daemon.Restart(t)
		}},
	}
	for _, p := range phases {
		dropCaches(t) // reads during the change go to the FUSE server
		time.Sleep(300 * time.Millisecond)
		host.phase(p.name)
		start := time.Now()
		p.do()
		time.Sleep(2 * time.Second)
		t.Logf("%s: daemon back in %v; longest host read %v", p.name, time.Since(start)-2*time.Second, host.longest(p.name))
	}
	host.stop()

	if _, err := execIn(ctx, c, id, "stop", "sh", "-c", ": > /tmp/stop"); err != nil {
		t.Fatal(err)
	}
	waitInContainer(ctx, t, c, id, "test -e /tmp/small.done -a -e /tmp/big.done", "the loops to end")
	if out, err := execIn(ctx, c, id, "errors", "cat", "/tmp/errors"); err == nil {
		t.Errorf("the running container's loops failed across the restarts:\n%s", out)
	}
	sums, err := execIn(ctx, c, id, "sums", "cat", "/tmp/sums")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(sums)
	for i, s := range lines {
		if s != want {
			t.Errorf("pass %d of the 64 MiB file: md5 %q, want %s", i+1, s, want)
		}
	}
	if err := host.err(); err != nil {
		t.Errorf("host reader: %v", err)
	}
	t.Logf("%d checksummed passes of the 64 MiB file, host reads %d", len(lines), host.reads())
	if log, err := os.ReadFile(filepath.Join(env.Daemon.Dir, "daemon.log")); err != nil || !bytes.Contains(log, []byte(`"build":"upgrade-test"`)) {
		t.Errorf("the upgraded build did not take the mounts over (daemon.log: %v)", err)
	}
	got, err := env.RunContainer(ctx, ref, "after-restarts")
	if err != nil || got != harness.HelloContent {
		t.Errorf("new container after the restarts printed %q (%v), want %q", got, err, harness.HelloContent)
	}
}

// buildUpgrade builds a second ociseek-snapshotter that logs another build
// name, standing in for an upgrade.
func buildUpgrade(t *testing.T) string {
	t.Helper()
	mod, err := harness.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.buildVersion=upgrade-test", "-o", dir+"/", "./cmd/ociseek-snapshotter")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the upgrade: %v\n%s", err, out)
	}
	return filepath.Join(dir, "ociseek-snapshotter")
}

// md5Of returns the md5 of file name in a gzipped tar layer.
func md5Of(t *testing.T, blob []byte, name string) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in the layer: %v", name, err)
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			sum := md5.New()
			if _, err := io.Copy(sum, tr); err != nil {
				t.Fatal(err)
			}
			return hex.EncodeToString(sum.Sum(nil))
		}
	}
}

// waitInContainer polls a shell test in the running container.
func waitInContainer(ctx context.Context, t *testing.T, c *harness.Containerd, id, test, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; ; i++ {
		if _, err := execIn(ctx, c, id, fmt.Sprintf("wait%d-%d", time.Now().UnixNano()%1000000, i), "sh", "-c", test); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 3 min for %s", what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dropCaches empties the page cache, so reads of a cached lazy layer go to
// its FUSE server again.
func dropCaches(t *testing.T) {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		t.Logf("drop caches: %v", err)
	}
}

// hostReader reads the data layer's small files straight from its FUSE
// mount, one after another with their pages dropped, and records the
// longest read of each phase.
type hostReader struct {
	mu      sync.Mutex
	cur     string
	max     map[string]time.Duration
	n       int
	failed  error
	done    chan struct{}
	stopped sync.WaitGroup
}

func startHostReader(t *testing.T, env *harness.Env) *hostReader {
	t.Helper()
	mounts, err := env.FUSEMounts()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, m := range mounts {
		_ = filepath.WalkDir(filepath.Join(m.Point, "data", "small"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, p)
			}
			return nil
		})
	}
	if len(files) == 0 {
		t.Fatalf("no small files in the FUSE mounts %v", mounts)
	}
	h := &hostReader{max: map[string]time.Duration{}, done: make(chan struct{}), cur: "before"}
	h.stopped.Add(1)
	go func() {
		defer h.stopped.Done()
		for i := 0; ; i++ {
			select {
			case <-h.done:
				return
			default:
			}
			start := time.Now()
			err := readAndDrop(files[i%len(files)])
			h.record(time.Since(start), err)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return h
}

func readAndDrop(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

func (h *hostReader) record(d time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	h.max[h.cur] = max(h.max[h.cur], d)
	if err != nil && h.failed == nil {
		h.failed = fmt.Errorf("during %s: %w", h.cur, err)
	}
}

func (h *hostReader) phase(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = name
}

func (h *hostReader) longest(name string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max[name]
}

func (h *hostReader) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

func (h *hostReader) reads() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *hostReader) stop() {
	close(h.done)
	h.stopped.Wait()
}

// execIn runs a command in a running task, bounded so a dead FUSE
// connection cannot hang the test.
func execIn(ctx context.Context, c *harness.Containerd, id, execID string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Ctr(ctx, append([]string{"tasks", "exec", "--exec-id", execID, id}, args...)...)
}
