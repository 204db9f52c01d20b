// Package toolbin finds the third-party programs the tests start (the
// distribution and olareg registries, containerd and its clients) and, when
// one is missing or older than its pinned module, builds it from that module
// under tools/, so that `go test` works in a fresh clone without a separate
// setup step. `make tools` and `make demo` build through the same table
// (the toolbuild command), so there is one spelling of each build.
//
// Binaries live in $OCISEEK_TOOLS_BIN, or <repository>/bin/tools when it is
// unset. A build holds an exclusive flock on a per-module lock file in that
// directory, so test binaries of packages that `go test ./...` runs in
// parallel (and parallel tests within one) build each module once and never
// see a half-written binary.
//
// Hazards: a first build takes minutes (containerd most of all) and needs the
// Go toolchain and the module proxy or a warm module cache.
package toolbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvDir names the environment variable holding the tools bin directory.
const EnvDir = "OCISEEK_TOOLS_BIN"

// modulePath is this repository's module; Dir looks for its go.mod.
const modulePath = "github.com/ociseek/ociseek"

// buildTimeout bounds one module's build; containerd on two cores takes a
// few minutes.
const buildTimeout = 15 * time.Minute

// ErrUnavailable marks errors meaning the binary cannot be had on this
// machine (no Go toolchain, no tools module): callers skip rather than fail.
var ErrUnavailable = errors.New("tool binary unavailable")

// module describes how one tools module builds its binaries.
type module struct {
	dir  string   // under tools/
	pkgs []string // main packages, built in one go build
	tags string   // build tags, if any
	env  []string // extra environment
}

// ContainerdDemoTags are the build tags of the containerd `make demo`
// starts: none of the CRI, devmapper, ZFS or tracing plugins, which the demo
// never uses, and about half the compile work of the full build.
const ContainerdDemoTags = "no_btrfs,no_cri,no_devmapper,no_zfs,no_tracing"

// moduleOf returns the module that builds the binary called name: the one
// table of tool builds, used by tests through Ensure and by the Makefile
// and the demo through the toolbuild command.
func moduleOf(name string) (module, bool) {
	switch name {
	case "registry":
		return module{dir: "registry", pkgs: []string{"github.com/distribution/distribution/v3/cmd/registry"}}, true
	case "olareg":
		return module{dir: "olareg", pkgs: []string{"github.com/olareg/olareg/cmd/olareg"}}, true
	case "containerd", "ctr", "containerd-shim-runc-v2":
		// no_btrfs: Debian has no btrfs headers and that snapshotter is never used.
		return module{dir: "containerd", tags: "no_btrfs", pkgs: []string{
			"github.com/containerd/containerd/v2/cmd/containerd",
			"github.com/containerd/containerd/v2/cmd/ctr",
			"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
		}}, true
	case "nerdctl":
		return module{dir: "nerdctl", pkgs: []string{"github.com/containerd/nerdctl/cmd/nerdctl"}}, true
	case "crictl":
		// cri-tools depends on cri-api/cri-client release candidates the
		// checksum database does not list; tools/crictl/go.sum pins them.
		return module{dir: "crictl", pkgs: []string{"sigs.k8s.io/cri-tools/cmd/crictl"},
			env: []string{"GONOSUMDB=sigs.k8s.io/cri-tools,k8s.io/cri-api,k8s.io/cri-client"}}, true
	}
	return module{}, false
}

// RepoRoot returns the directory of this repository's go.mod, searching
// upwards from the working directory (tests run in their package's
// directory; the tools modules' own go.mod files are skipped).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isRootModule(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory: %w", modulePath, ErrUnavailable)
		}
		dir = parent
	}
}

// isRootModule reports whether a go.mod declares this repository's module.
func isRootModule(gomod []byte) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}

// Dir returns the tools bin directory: $OCISEEK_TOOLS_BIN, else
// <repository>/bin/tools. It does not create it.
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "tools"), nil
}

// Ensure returns the path of the tool binary called name, building its
// module first when the binary is missing or older than the module's go.sum.
// logf, when not nil, hears about a build before it starts (it can take
// minutes). Errors wrapping ErrUnavailable mean this machine cannot build
// it.
func Ensure(ctx context.Context, name string, logf func(format string, args ...any)) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	return EnsureIn(ctx, dir, name, "", logf)
}

// EnsureIn is Ensure with the bin directory given, and with tags, when not
// empty, in place of the module's own build tags (the demo's containerd:
// ContainerdDemoTags). Binaries built with other tags belong in a
// directory of their own: the up-to-date rule does not look at tags.
func EnsureIn(ctx context.Context, dir, name, tags string, logf func(format string, args ...any)) (string, error) {
	mod, ok := moduleOf(name)
	if !ok {
		return "", fmt.Errorf("toolbin: no tools module builds %q", name)
	}
	if tags != "" {
		mod.tags = tags
	}
	bin := filepath.Join(dir, name)
	root, rootErr := RepoRoot()
	var gosum string
	if rootErr == nil {
		gosum = filepath.Join(root, "tools", mod.dir, "go.sum")
	}
	if fresh(bin, gosum) {
		return bin, nil
	}
	if rootErr != nil {
		return "", fmt.Errorf("%s is missing and cannot be built: %w", bin, rootErr)
	}
	if _, err := os.Stat(gosum); err != nil {
		return "", fmt.Errorf("%s is missing and tools/%s is not here to build it: %w", bin, mod.dir, ErrUnavailable)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("%s is missing and there is no go command to build it: %w", bin, ErrUnavailable)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create tools bin directory: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, ".build-"+mod.dir+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if fresh(bin, gosum) {
		return bin, nil
	}
	if logf != nil {
		logf("toolbin: building %s from tools/%s into %s (first use; `make tools` does this ahead of time)", name, mod.dir, dir)
	}
	if err := build(ctx, gobin, filepath.Join(root, "tools", mod.dir), dir, mod); err != nil {
		return "", err
	}
	if !fresh(bin, gosum) {
		return "", fmt.Errorf("build of tools/%s left no up-to-date %s", mod.dir, bin)
	}
	return bin, nil
}

// Fresh reports whether the binary called name in dir is up to date: it
// exists and is not older than its tools module's go.sum (when this
// repository is here to tell). It builds nothing.
func Fresh(dir, name string) bool {
	mod, ok := moduleOf(name)
	if !ok {
		return false
	}
	gosum := ""
	if root, err := RepoRoot(); err == nil {
		gosum = filepath.Join(root, "tools", mod.dir, "go.sum")
	}
	return fresh(filepath.Join(dir, name), gosum)
}

// fresh reports whether bin exists and, when gosum is known, is not older
// than it (the rule `make tools` uses to skip a module).
func fresh(bin, gosum string) bool {
	b, err := os.Stat(bin)
	if err != nil || b.IsDir() {
		return false
	}
	if gosum == "" {
		return true
	}
	s, err := os.Stat(gosum)
	return err != nil || !b.ModTime().Before(s.ModTime())
}

// lock takes an exclusive flock on path, creating it, and returns its
// release. flock locks belong to the open file, so two goroutines of one
// process exclude each other as two processes do.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// build runs go build for mod in modDir, writing the binaries into outDir.
// go build renames each finished binary into place, so no reader ever sees
// a partial file.
func build(ctx context.Context, gobin, modDir, outDir string, mod module) error {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	// No symbols or DWARF: nobody debugs these binaries, and stripping
	// shortens every link.
	args := []string{"build", "-ldflags=-s -w"}
	if mod.tags != "" {
		args = append(args, "-tags", mod.tags)
	}
	args = append(args, "-o", outDir+string(filepath.Separator))
	args = append(args, mod.pkgs...)
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = modDir
	// GOWORK=off: a go.work above the repository must not pull the tools
	// modules into another build list. CGO_ENABLED=0 as in the Makefile.
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off"), mod.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build tools/%s: %w\n%s", mod.dir, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Path is Ensure for tests: it returns the binary's path, logging a build
// through t, and skips t with a one-line how-to when the binary cannot be
// had (a missing tool is a setup problem, not a test failure).
func Path(t testing.TB, name string) string {
	t.Helper()
	p, err := Ensure(context.Background(), name, t.Logf)
	if err != nil {
		first, rest, _ := strings.Cut(err.Error(), "\n")
		if rest != "" {
			t.Logf("%s", rest) // the build's output, for whoever looks
		}
		t.Skipf("%s binary unavailable (%s); run `make tools`", name, first)
	}
	return p
}
