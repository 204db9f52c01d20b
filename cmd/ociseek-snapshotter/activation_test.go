package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// socketActivated starts the daemon the way systemd's socket activation
// does: lis becomes fd 3 and LISTEN_PID/LISTEN_FDS name it. LISTEN_PID must
// be the daemon's own pid, known only once it runs, so a shell sets it to
// its pid ($$) and then execs the daemon in place, keeping the pid.
func socketActivated(t *testing.T, lis *net.UnixListener) func(*exec.Cmd) {
	f, err := lis.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func(cmd *exec.Cmd) {
		script := `export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@"`
		cmd.Args = append([]string{"sh", "-c", script, cmd.Path}, cmd.Args[1:]...)
		cmd.Path = "/bin/sh"
		cmd.ExtraFiles = []*os.File{f}
	}
}

// TestDaemonSocketActivation: the daemon serves on the socket it is
// handed, and leaves it in place when it stops, because the socket is
// systemd's (containerd's next call starts the daemon again).
func TestDaemonSocketActivation(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "ociseek.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o711); err != nil {
		t.Fatal(err)
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()

	d := startDaemon(t, dir, socketActivated(t, lis))
	sn := d.client(t)
	if _, err := sn.Prepare(t.Context(), "active", ""); err != nil {
		t.Fatalf("Prepare over the handed-over socket: %v", err)
	}
	if info, err := sn.Stat(t.Context(), "active"); err != nil || info.Name != "active" {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	d.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("handed-over socket removed on stop: %v", err)
	}
	// The socket still accepts connections (queued for the next start).
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("handed-over socket no longer accepts: %v", err)
	}
	c.Close()
}
