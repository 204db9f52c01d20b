package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Environment of the FUSE server child (TestHelperFUSEServer).
const (
	envFUSEMountpoint = "OCISEEK_SNAPSHOT_TEST_FUSE_MP"
	envFUSESource     = "OCISEEK_SNAPSHOT_TEST_FUSE_SRC"
)

// TestHelperFUSEServer is not a test: it is the body of the child process
// procFS starts, a real FUSE server (a go-fuse loopback of a directory)
// that can be killed like a crashed daemon.
func TestHelperFUSEServer(t *testing.T) {
	mp := os.Getenv(envFUSEMountpoint)
	if mp == "" {
		return
	}
	root, err := fusefs.NewLoopbackRoot(os.Getenv(envFUSESource))
	if err != nil {
		t.Fatal(err)
	}
	server, err := fusefs.Mount(mp, root, &fusefs.Options{MountOptions: fuse.MountOptions{FsName: "ociseek-test", DirectMount: true}})
	if err != nil {
		t.Fatal(err)
	}
	server.Wait()
}

// procFS is a FileSystem whose mounts are served by FUSE server child
// processes, so that a test can kill one and leave a dead mount behind.
type procFS struct {
	src string
	mu  sync.Mutex
	srv map[string]*exec.Cmd
}

func (f *procFS) Mount(ctx context.Context, mp string, _ map[string]string) error {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFUSEServer$")
	cmd.Env = append(os.Environ(), envFUSEMountpoint+"="+mp, envFUSESource+"="+f.src)
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := mountinfo.Mounted(mp); ok {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return errors.New("FUSE server did not mount")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.srv[mp] = cmd
	return nil
}

func (f *procFS) Check(context.Context, string, map[string]string) error { return nil }

func (f *procFS) Unmount(_ context.Context, mp string) error {
	f.mu.Lock()
	cmd := f.srv[mp]
	delete(f.srv, mp)
	f.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s: not mounted by this file system", mp)
	}
	err := unix.Unmount(mp, 0)
	cmd.Wait()
	return err
}

// crash kills every FUSE server, leaving their mounts dead (ENOTCONN).
func (f *procFS) crash() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for mp, cmd := range f.srv {
		cmd.Process.Kill()
		cmd.Wait()
		delete(f.srv, mp)
	}
}

// TestRestoreAfterCrash: the daemon dies with SIGKILL, its FUSE servers with
// it. On the next start the dead mounts are released and the lazy layers
// mounted again, and containers can be built on them.
func TestRestoreAfterCrash(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "lazy.txt"), []byte("served lazily"), 0o644)
	fsys := &procFS{src: src, srv: map[string]*exec.Cmd{}}
	h := newHarness(t, root, fsys)
	t.Cleanup(fsys.crash)
	if _, err := h.unpackPrepare("layer-1", ""); err == nil {
		t.Fatal("Prepare returned mounts, want AlreadyExists")
	}
	id, _ := h.idOf("layer-1")
	mp := h.sn.upperPath(id)
	if got, err := h.readThrough("layer-1", "lazy.txt"); err != nil || got != "served lazily" {
		t.Fatalf("read through FUSE layer: %q, %v", got, err)
	}

	fsys.crash()
	h.sn.Close()
	if _, err := os.Stat(filepath.Join(mp, "lazy.txt")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after the crash the mount answers %v, want ENOTCONN", err)
	}

	fsys2 := &procFS{src: src, srv: map[string]*exec.Cmd{}}
	t.Cleanup(fsys2.crash)
	h2 := newHarness(t, root, fsys2)
	if n, _ := countMounts(mp); n != 1 {
		t.Errorf("%d mounts on %s after restore, want 1", n, mp)
	}
	if got, err := h2.readThrough("layer-1", "lazy.txt"); err != nil || got != "served lazily" {
		t.Errorf("read after restore: %q, %v", got, err)
	}
}
