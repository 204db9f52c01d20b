package toolbin

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEnsureBuildsOnceUnderConcurrency starts from an empty tools directory
// and asks for olareg from several goroutines at once, as parallel tests
// do: every caller gets the same working binary and only one of them
// builds it. A second round finds it fresh and builds nothing.
func TestEnsureBuildsOnceUnderConcurrency(t *testing.T) {
	if testing.Short() {
		t.Skip("builds olareg from tools/olareg")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	var builds atomic.Int32
	logf := func(string, ...any) { builds.Add(1) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	paths := make([]string, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = Ensure(ctx, "olareg", logf) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if paths[i] != filepath.Join(dir, "olareg") {
			t.Errorf("caller %d got %s, want %s", i, paths[i], filepath.Join(dir, "olareg"))
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("%d builds for 4 concurrent callers, want 1", n)
	}
	out, err := exec.Command(paths[0], "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serve") {
		t.Errorf("olareg --help: %v\n%s", err, out)
	}
	if _, err := Ensure(ctx, "olareg", logf); err != nil || builds.Load() != 1 {
		t.Errorf("second Ensure: err %v, builds %d, want no new build", err, builds.Load())
	}
}

// TestFreshFollowsGoSum checks the rebuild rule shared with `make tools`:
// a binary older than its module's go.sum is stale, a newer one is kept,
// and a missing one is never fresh.
func TestFreshFollowsGoSum(t *testing.T) {
	dir := t.TempDir()
	bin, sum := filepath.Join(dir, "bin"), filepath.Join(dir, "go.sum")
	if fresh(bin, sum) {
		t.Error("missing binary counted as fresh")
	}
	for _, p := range []string{bin, sum} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, recent := time.Now().Add(-time.Hour), time.Now()
	os.Chtimes(bin, old, old)
	os.Chtimes(sum, recent, recent)
	if fresh(bin, sum) {
		t.Error("binary older than go.sum counted as fresh")
	}
	os.Chtimes(bin, recent.Add(time.Minute), recent.Add(time.Minute))
	if !fresh(bin, sum) {
		t.Error("binary newer than go.sum counted as stale")
	}
}

// TestFreshLooksAtTheToolsModule checks what `make demo` asks before it
// reuses a containerd: a binary in the given directory, judged against its
// own module's go.sum; an unknown tool is never fresh.
func TestFreshLooksAtTheToolsModule(t *testing.T) {
	dir := t.TempDir()
	if Fresh(dir, "olareg") {
		t.Error("missing olareg counted as fresh")
	}
	bin := filepath.Join(dir, "olareg")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	os.Chtimes(bin, future, future)
	if !Fresh(dir, "olareg") {
		t.Error("olareg newer than tools/olareg/go.sum counted as stale")
	}
	past := time.Unix(0, 0)
	os.Chtimes(bin, past, past)
	if Fresh(dir, "olareg") {
		t.Error("olareg older than tools/olareg/go.sum counted as fresh")
	}
	if Fresh(dir, "no-such-tool") {
		t.Error("an unknown tool counted as fresh")
	}
}

// TestEnsureRefusesUnknownTool checks that a name no tools module builds is
// an error, not a silent empty path.
func TestEnsureRefusesUnknownTool(t *testing.T) {
	if _, err := Ensure(context.Background(), "no-such-tool", nil); err == nil {
		t.Fatal("Ensure of an unknown tool succeeded")
	}
}

// TestEnsureWithoutGoIsUnavailable checks that a machine without the go
// command gets ErrUnavailable (callers skip), not a build failure.
func TestEnsureWithoutGoIsUnavailable(t *testing.T) {
	t.Setenv(EnvDir, t.TempDir())
	t.Setenv("PATH", t.TempDir())
	_, err := Ensure(context.Background(), "registry", nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ensure without go: %v, want ErrUnavailable", err)
	}
}

// TestDirDefaultsToRepoBinTools checks the default tools directory when
// $OCISEEK_TOOLS_BIN is unset.
func TestDirDefaultsToRepoBinTools(t *testing.T) {
	t.Setenv(EnvDir, "")
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "tools", "registry", "go.mod")); err != nil {
		t.Errorf("repository root %s has no tools/registry: %v", root, err)
	}
	if got, _ := Dir(); got != filepath.Join(root, "bin", "tools") {
		t.Errorf("Dir() = %s, want %s", got, filepath.Join(root, "bin", "tools"))
	}
}
