// Package integration runs ociseek end to end, as a user would: a registry,
// containerd and the ociseek-snapshotter daemon as child processes on
// 127.0.0.1, images built and pushed by the tests, and the ociseek and ctr
// binaries driven from the outside. Tests assert on what the user sees (the
// commands' output) and on how it happened (mount table, snapshot labels,
// bytes the registry served), never on log lines.
//
// The tests need root, /dev/fuse, runc, busybox-static and the tools built
// by `make tools` ($OCISEEK_TOOLS_BIN). A missing prerequisite fails the run
// with a message naming it: these tests are never skipped silently.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ociseek/ociseek/integration/harness"
)

// tools holds the binaries found or built once by TestMain; tests only read
// it.
var tools harness.Tools

// cacheDir keeps generated layers between runs (keyed by their params).
var cacheDir = filepath.Join(os.TempDir(), "ociseek-integration-cache")

func TestMain(m *testing.M) {
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	var err error
	if tools, err = harness.FindTools(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration: these tests start containerd and FUSE mounts and must run as root")
		return 1
	}
	if dir := os.Getenv(envProjectBin); dir != "" {
		// Prebuilt binaries, e.g. from a clean checkout while the work tree
		// is mid-edit.
		tools.Ociseek = filepath.Join(dir, "ociseek")
		tools.Snapshotter = filepath.Join(dir, "ociseek-snapshotter")
		return m.Run()
	}
	binDir, err := os.MkdirTemp("", "ociseek-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	modDir, err := harness.ModuleDir()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		err = harness.BuildProject(ctx, modDir, binDir, &tools)
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	return m.Run()
}

// envProjectBin names a directory with prebuilt ociseek and
// ociseek-snapshotter binaries; unset, TestMain builds them from this
// module.
const envProjectBin = "OCISEEK_INTEGRATION_BIN"

// testContext returns a context that ends before the test's deadline, so a
// hang fails with a message instead of a timeout panic.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-30*time.Second))
	}
	t.Cleanup(cancel)
	return ctx
}
