package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// commandTimeout bounds one client command (pull, run, explain).
const commandTimeout = 5 * time.Minute

// EnvOptions select how the processes of an Env are configured.
type EnvOptions struct {
	// Daemon configures the ociseek-snapshotter.
	Daemon DaemonOptions
	// CRI enables containerd's CRI plugin (see ContainerdOptions.CRI).
	CRI bool
	// SandboxImage is the CRI pod sandbox image (see ContainerdOptions).
	SandboxImage string
	// CRIKeychain turns on the daemon's [cri_keychain]: it serves the CRI
	// image service on its own socket (Env.ImageService) and forwards to
	// this containerd.
	CRIKeychain bool
}

// Env is the daemon and containerd wired together in one private
// directory, the way a node runs them.
type Env struct {
	// Dir is the private directory holding everything.
	Dir string
	// Tools are the binaries in use.
	Tools Tools
	// Daemon is the ociseek-snapshotter.
	Daemon *Daemon
	// Containerd is containerd, with the daemon as proxy snapshotter "soci".
	Containerd *Containerd
	// ImageService is the daemon's CRI image service socket (crictl's
	// --image-endpoint), with EnvOptions.CRIKeychain; "" without.
	ImageService string
}

// NewEnv starts the daemon and containerd in a fresh directory under /tmp
// (short, because unix socket paths are limited to 107 bytes). Cleanup
// stops containerd, then the daemon, unmounts what is left and removes the
// directory, unless something could not be unmounted. It is NewEnvIn with
// t's scope, failing t on error.
func NewEnv(t T, tools Tools, opts EnvOptions) *Env {
	t.Helper()
	e, err := NewEnvIn(ScopeOf(t), tools, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return e
}

// NewEnvIn starts the daemon and containerd in a fresh directory under
// /tmp. s.Defer holds, from the moment each exists, the removal of the
// directory (unless something under it could not be unmounted, or the run
// failed), the daemon's stop and containerd's stop, so they run in the
// reverse order: containerd, the daemon, the directory. On error whatever
// had started is still stopped by those.
func NewEnvIn(s Scope, tools Tools, opts EnvOptions) (*Env, error) {
	dir, err := os.MkdirTemp("/tmp", "osk-")
	if err != nil {
		return nil, fmt.Errorf("env dir: %w", err)
	}
	s.Defer(func() { removeEnvDir(s, dir) })
	e := &Env{Dir: dir, Tools: tools}
	if opts.CRIKeychain {
		// containerd's socket, as StartContainerdIn names it under dir/c.
		// No listen_path: the image service is on the daemon's own socket,
		// as a node configured with the defaults has it.
		opts.Daemon.Extra += fmt.Sprintf("\n[cri_keychain]\nenable = true\nimage_service_path = %q\n",
			filepath.Join(dir, "c", "containerd.sock"))
	}
	if e.Daemon, err = StartDaemonIn(s, tools, filepath.Join(dir, "d"), opts.Daemon); err != nil {
		return nil, err
	}
	if opts.CRIKeychain {
		e.ImageService = e.Daemon.Address
	}
	e.Containerd, err = StartContainerdIn(s, tools, filepath.Join(dir, "c"), ContainerdOptions{
		SociSocket:   e.Daemon.Address,
		SociRoot:     e.Daemon.Root,
		CRI:          opts.CRI,
		SandboxImage: opts.SandboxImage,
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// removeEnvDir unmounts what is left under dir and deletes it; it never
// deletes through a mount (a walk into a FUSE or overlay mount would
// delete the wrong files or hang).
func removeEnvDir(s Scope, dir string) {
	if err := UnmountAll(dir); err != nil {
		s.Logf("unmount under %s: %v", dir, err)
	}
	if m, err := MountsUnder(dir); err != nil || len(m) > 0 {
		s.Logf("keeping %s: mounts remain (%v, %v)", dir, m, err)
		return
	}
	if s.Failed() {
		s.Logf("test failed: keeping %s for inspection", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		s.Logf("remove %s: %v", dir, err)
	}
}

// Ociseek runs the ociseek CLI against this containerd; verbs that talk to
// containerd get its address and the harness namespace.
func (e *Env) Ociseek(ctx context.Context, verb string, args ...string) (string, error) {
	return e.ociseekIn(ctx, Namespace, verb, args...)
}

func (e *Env) ociseekIn(ctx context.Context, ns, verb string, args ...string) (string, error) {
	full := []string{verb}
	if verb == "pull" || verb == "explain" {
		full = append(full, "--address", e.Containerd.Address, "--namespace", ns)
	}
	return Run(ctx, commandTimeout, e.Tools.Ociseek, append(full, args...)...)
}

// Pull runs `ociseek pull REF`.
func (e *Env) Pull(ctx context.Context, ref string) (string, error) {
	return e.Ociseek(ctx, "pull", ref)
}

// Explain runs `ociseek explain REF` and returns its rows keyed by layer
// digest: the PATH and REASON columns.
func (e *Env) Explain(ctx context.Context, ref string) (string, map[string][2]string, error) {
	return e.ExplainIn(ctx, Namespace, ref)
}

// ExplainIn is Explain for an image in containerd namespace ns (the CRI
// plugin's is "k8s.io").
func (e *Env) ExplainIn(ctx context.Context, ns, ref string) (string, map[string][2]string, error) {
	out, err := e.ociseekIn(ctx, ns, "explain", ref)
	if err != nil {
		return out, nil, err
	}
	rows := map[string][2]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		// LAYER DIGEST SIZE UNIT PATH REASON WHY...
		if len(f) >= 6 {
			rows[f[1]] = [2]string{f[4], f[5]}
		}
	}
	return out, rows, nil
}

// RunContainer runs REF with `ctr run --rm --snapshotter soci` (the image's
// command, or args when given) and returns what the container printed.
func (e *Env) RunContainer(ctx context.Context, ref, id string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	full := append([]string{"run", "--rm", "--snapshotter", "soci", ref, id}, args...)
	return e.Containerd.Ctr(ctx, full...)
}

// SnapshotLabels returns the labels of snapshot key on the soci
// snapshotter, from `ctr snapshots info`.
func (e *Env) SnapshotLabels(ctx context.Context, key string) (map[string]string, error) {
	out, err := e.Containerd.Ctr(ctx, "snapshots", "--snapshotter", "soci", "info", key)
	if err != nil {
		return nil, err
	}
	return parseSnapshotInfo(out)
}

// FUSEMounts returns the FUSE mounts under the daemon's root.
func (e *Env) FUSEMounts() ([]Mount, error) {
	all, err := MountsUnder(e.Daemon.Root)
	if err != nil {
		return nil, err
	}
	var fuse []Mount
	for _, m := range all {
		if m.IsFUSE() {
			fuse = append(fuse, m)
		}
	}
	return fuse, nil
}

// String describes the env for failure messages.
func (e *Env) String() string {
	return fmt.Sprintf("env %s (daemon pid %d, containerd pid %d)", e.Dir, e.Daemon.PID(), e.Containerd.PID())
}
