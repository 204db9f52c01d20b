package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// startTimeout bounds how long containerd or the daemon may take to come up.
const startTimeout = 60 * time.Second

// Namespace is the containerd namespace the harness uses.
const Namespace = "ociseek-test"

// ContainerdOptions selects what the containerd configuration enables.
type ContainerdOptions struct {
	// SociSocket is the daemon's socket; containerd reaches it as the proxy
	// snapshotter "soci". Empty: no proxy snapshotter.
	SociSocket string
	// SociRoot is the daemon's root, exported to containerd (and kubelet) as
	// the snapshotter's root.
	SociRoot string
	// CRI enables the CRI plugin with "soci" as its snapshotter and snapshot
	// annotations on (disable_snapshot_annotations = false), as a Kubernetes
	// node would run it. Off, the plugin is disabled so containerd starts
	// faster.
	CRI bool
	// SandboxImage is the CRI pod sandbox ("pause") image; tests point it
	// at an image in their own registry, since nothing is pulled from the
	// internet.
	SandboxImage string
}

// Containerd is a containerd process with private root, state and sockets.
type Containerd struct {
	*Process
	// Dir holds the configuration, root, state and sockets.
	Dir string
	// Address is the gRPC socket.
	Address string
	// Root is containerd's root directory.
	Root string

	ctr string // path of the ctr binary
}

// StartContainerd starts containerd from tools with a configuration written
// under dir and waits until it answers; t.Cleanup stops it (by PID) and
// unmounts whatever it left under dir. It is StartContainerdIn with t's
// scope, failing t on error.
func StartContainerd(t T, tools Tools, dir string, opts ContainerdOptions) *Containerd {
	t.Helper()
	c, err := StartContainerdIn(ScopeOf(t), tools, dir, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// StartContainerdIn starts containerd from tools with a configuration
// written under dir and waits until it answers. Once the process has
// started, s.Defer holds its stop (by PID) and the unmount of whatever it
// left under dir, also when StartContainerdIn then returns an error.
func StartContainerdIn(s Scope, tools Tools, dir string, opts ContainerdOptions) (*Containerd, error) {
	c := &Containerd{
		Dir:     dir,
		Address: filepath.Join(dir, "containerd.sock"),
		Root:    filepath.Join(dir, "root"),
		ctr:     tools.Ctr,
	}
	if err := mkdirs(c.Root, filepath.Join(dir, "state")); err != nil {
		return nil, fmt.Errorf("containerd dirs: %w", err)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config(opts)), 0o600); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	// The shim and runc are found on PATH: put the tools directory first.
	env := []string{"PATH=" + filepath.Dir(tools.Containerd) + ":" + os.Getenv("PATH")}
	p, err := StartProcess("containerd", filepath.Join(dir, "containerd.log"), tools.Containerd,
		[]string{"--config", cfg}, env)
	if err != nil {
		return nil, err
	}
	c.Process = p
	s.Defer(func() { c.stop(s) })
	err = waitFor(p, startTimeout, func() error {
		_, err := c.Ctr(context.Background(), "version")
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// stop stops containerd and its shims' containers, then unmounts anything
// left under its directory.
func (c *Containerd) stop(s Scope) {
	c.killTasks()
	if err := c.Stop(0); err != nil {
		s.Logf("stop containerd: %v", err)
	}
	if err := UnmountAll(c.Dir); err != nil {
		s.Logf("unmount containerd leftovers: %v", err)
	}
	if s.Failed() {
		s.Logf("containerd log %s (tail):\n%s", c.Log, c.Tail(3000))
	}
}

// killTasks kills and deletes every task and container in the harness
// namespace, so no shim or container outlives the test.
func (c *Containerd) killTasks() {
	if c.Exited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Ctr(ctx, "containers", "list", "--quiet")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = c.Ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = c.Ctr(ctx, "tasks", "delete", "--force", id)
		_, _ = c.Ctr(ctx, "containers", "delete", id)
	}
}

// config returns containerd's TOML configuration (version 3).
func (c *Containerd) config(opts ContainerdOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\n", c.Root, filepath.Join(c.Dir, "state"))
	if !opts.CRI {
		b.WriteString(`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]` + "\n")
	}
	fmt.Fprintf(&b, "\n[grpc]\n  address = %q\n", c.Address)
	fmt.Fprintf(&b, "\n[ttrpc]\n  address = %q\n", c.Address+".ttrpc")
	fmt.Fprintf(&b, "\n[debug]\n  address = %q\n  level = \"info\"\n", filepath.Join(c.Dir, "debug.sock"))
	if opts.SociSocket != "" {
		fmt.Fprintf(&b, "\n[proxy_plugins.soci]\n  type = \"snapshot\"\n  address = %q\n", opts.SociSocket)
		fmt.Fprintf(&b, "  [proxy_plugins.soci.exports]\n    root = %q\n", opts.SociRoot)
	}
	if opts.CRI {
		b.WriteString(criConfig)
		fmt.Fprintf(&b, "\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = %q\n", opts.SandboxImage)
	}
	return b.String()
}

// criConfig configures the CRI plugin the way a Kubernetes node using
// ociseek would: images unpacked on "soci", with the snapshot annotations
// (cri.image-ref, cri.manifest-digest, cri.layer-digest) passed on.
const criConfig = `
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "soci"
  disable_snapshot_annotations = false

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = ""

[plugins.'io.containerd.cri.v1.runtime']
  # Host-network pods in nested containers: no sysctls runc may not set.
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  # Sandboxes ask for oom_score_adj -998, which a nested container may not
  # lower to.
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  snapshotter = "soci"
`

// Ctr runs ctr against this containerd in the harness namespace and returns
// its standard output (containerd's warnings on stderr are dropped); an
// error carries both.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--address", c.Address, "--namespace", Namespace}, args...)
	cmd := exec.CommandContext(ctx, c.ctr, full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// dialUnix reports whether a unix socket accepts connections.
func dialUnix(path string) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}
