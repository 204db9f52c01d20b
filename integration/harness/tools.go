// Package harness runs ociseek end to end the way a user does: it starts
// containerd, the ociseek-snapshotter daemon and registries as child
// processes on 127.0.0.1 in private directories, builds test images without
// Docker, pushes them, and drives the ociseek, ctr (and other client)
// binaries.
//
// Every process is stopped by its PID, and everything mounted under a
// harness directory is unmounted when the test (or demo) ends, even after a
// failure. Test helpers take a T, which *testing.T satisfies, and fail it
// on error; each has an error-returning form ending in In that takes a
// Scope instead (where to register cleanups), which the demo program uses.
//
// Hazards: the harness needs root, /dev/fuse, overlayfs, runc and busybox;
// it fails with a message naming what is missing rather than skipping. The
// tool binaries (containerd, ctr, the runc shim, nerdctl, crictl) are taken
// from $OCISEEK_TOOLS_BIN (default bin/tools), where `make tools` puts them;
// a missing one is built from its pinned module under tools/ on first use
// (package toolbin), which takes minutes for containerd.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/internal/toolbin"
)

// T is the part of testing.TB the harness uses.
type T interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
}

// EnvToolsBin names the directory holding the third-party tool binaries.
const EnvToolsBin = toolbin.EnvDir

// Tools are the paths of the programs the harness starts.
type Tools struct {
	// Containerd, Ctr and Shim are built from tools/containerd.
	Containerd, Ctr, Shim string
	// Runc is Debian's runc.
	Runc string
	// Busybox is Debian's busybox-static, copied into test images.
	Busybox string
	// Ociseek and Snapshotter are this project's binaries, built by
	// BuildProject.
	Ociseek, Snapshotter string
}

// FindTools locates the third-party programs, building the containerd
// binaries from tools/containerd when they are missing, and reports every
// program it could not provide with the command that does.
func FindTools() (Tools, error) {
	var tools Tools
	var missing []string
	inDir := func(name string) string {
		p, err := toolbin.Ensure(context.Background(), name, func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		})
		if err != nil {
			first, _, _ := strings.Cut(err.Error(), "\n")
			missing = append(missing, fmt.Sprintf("%s: %s (run `make tools`)", name, first))
		}
		return p
	}
	tools.Containerd = inDir("containerd")
	tools.Ctr = inDir("ctr")
	tools.Shim = inDir("containerd-shim-runc-v2")
	onPath := func(name, pkg string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", name, pkg))
		}
		return p
	}
	tools.Runc = onPath("runc", "runc")
	tools.Busybox = "/bin/busybox"
	if _, err := os.Stat(tools.Busybox); err != nil {
		missing = append(missing, "/bin/busybox (apt-get install busybox-static)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse (load the fuse module; run as root)")
	}
	if len(missing) > 0 {
		return tools, fmt.Errorf("integration prerequisites missing: %s", strings.Join(missing, "; "))
	}
	return tools, nil
}

// Tool returns the path of the named tool binary (e.g. "crictl",
// "nerdctl"), building it from its module under tools/ when missing. A test
// that cannot have it is skipped with a how-to: the machine lacks a build
// prerequisite, the code under test is not at fault.
func Tool(t testing.TB, name string) string {
	t.Helper()
	return toolbin.Path(t, name)
}

// BuildProject builds the ociseek and ociseek-snapshotter binaries of the
// module at moduleDir into outDir, as users get them (CGO_ENABLED=0), and
// records their paths in tools.
func BuildProject(ctx context.Context, moduleDir, outDir string, tools *Tools) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", outDir+"/", "./cmd/ociseek", "./cmd/ociseek-snapshotter")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ociseek binaries: %w\n%s", err, out)
	}
	tools.Ociseek = filepath.Join(outDir, "ociseek")
	tools.Snapshotter = filepath.Join(outDir, "ociseek-snapshotter")
	return nil
}

// ModuleDir returns the directory of the go.mod enclosing the working
// directory.
func ModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Run runs a program with a deadline and returns its standard output; the
// error includes stdout and stderr, so a failing test shows what the user
// saw.
func Run(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}
