package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
	"github.com/ociseek/ociseek/internal/regtest"
)

// TestDaemonKilledWhileContainerRuns kills the daemon with SIGKILL while a
// container of a lazily pulled image runs, and starts it again.
//
// What users get (asserted): the restarted daemon mounts the image's lazy
// layers again from the labels it stored, so new containers from the same
// image start and read their files.
//
// What happens to the container that was running (observed and logged;
// asserted only in that it does not hang): its root file system is an
// overlay whose lower layer was the killed daemon's FUSE mount. FUSE has no
// hand-over of a connection to a new process, and the restarted daemon
// mounts a new FUSE file system at the same path; overlayfs then finds its
// lower layer changed and every open in the old container fails with
// ESTALE ("Stale file handle"), even for files it read before. Containers
// started before a daemon crash must be restarted; new ones work.
func TestDaemonKilledWhileContainerRuns(t *testing.T) {
	ctx := testContext(t)
	img := testImage(t, smallData)
	reg := regtest.Start(t, regtest.KindDistribution)
	_, ref := lazyImage(t, reg, img, "restart", indexV1, indexFlags)
	env := harness.NewEnv(t, tools, harness.EnvOptions{})
	if _, err := env.Pull(ctx, ref); err != nil {
		t.Fatal(err)
	}
	c := env.Containerd
	if _, err := c.Ctr(ctx, "run", "-d", "--snapshotter", "soci", ref, "running", "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	if out, err := execIn(ctx, c, "running", "e1", "cat", "/"+harness.HelloPath); err != nil || out != harness.HelloContent {
		t.Fatalf("before the kill, the running container reads %q (%v)", out, err)
	}

	env.Daemon.Kill(t)
	env.Daemon.Restart(t)

	got, err := env.RunContainer(ctx, ref, "after-restart")
	if err != nil {
		t.Fatalf("new container after the daemon restart: %v", err)
	}
	if got != harness.HelloContent {
		t.Errorf("new container after the daemon restart printed %q, want %q", got, harness.HelloContent)
	}
	if m, err := env.FUSEMounts(); err != nil || len(m) == 0 {
		t.Errorf("after the restart, FUSE mounts under the daemon root: %v (%v); want the data layer mounted again", m, err)
	}
	// The running container: a file read before (page cache) and one never
	// read (needs the dead connection).
	cached, errCached := execIn(ctx, c, "running", "e2", "cat", "/"+harness.HelloPath)
	fresh, errFresh := execIn(ctx, c, "running", "e3", "md5sum", "/data/random/blob-000")
	t.Logf("running container after the daemon restart: cached file %q (err %v); unread file %q (err %v)",
		cached, errCached, strings.TrimSpace(fresh), errFresh)
}

// execIn runs a command in a running task, bounded so a dead FUSE
// connection cannot hang the test.
func execIn(ctx context.Context, c *harness.Containerd, id, execID string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Ctr(ctx, append([]string{"tasks", "exec", "--exec-id", execID, id}, args...)...)
}
