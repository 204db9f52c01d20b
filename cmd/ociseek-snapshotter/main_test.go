package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/mount"
	snapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/snapshot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// daemonBin is the daemon built once for all tests of this package.
var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ociseek-snapshotter-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	daemonBin = filepath.Join(dir, "ociseek-snapshotter")
	build := exec.Command("go", "build", "-o", daemonBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build daemon:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running ociseek-snapshotter process.
type daemon struct {
	cmd     *exec.Cmd
	socket  string
	metrics string
	log     *bytes.Buffer
	exited  chan error
	// notified receives what the daemon sends to $NOTIFY_SOCKET, as
	// systemd would.
	notified chan string
}

// startDaemon starts the daemon under dir as systemd starts a Type=notify
// service, and returns once it has reported READY=1. Each opt may change
// the command before it starts.
func startDaemon(t testing.TB, dir string, opts ...func(*exec.Cmd)) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon mounts overlay")
	}
	d := &daemon{
		socket:   filepath.Join(dir, "run", "ociseek.sock"),
		metrics:  filepath.Join(dir, "metrics.sock"),
		log:      &bytes.Buffer{},
		exited:   make(chan error, 1),
		notified: make(chan string, 8),
	}
	cfg := fmt.Sprintf("[daemon]\nroot = %q\n[metrics]\naddress = %q\nnetwork = \"unix\"\n", filepath.Join(dir, "root"), d.metrics)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	notifyPath := d.listenNotify(t, dir)
	d.cmd = exec.Command(daemonBin, "--config", cfgPath, "--address", d.socket, "--log-level", "debug")
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	for _, opt := range opts {
		opt(d.cmd)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log)
		}
	})
	select {
	case msg := <-d.notified:
		if msg != "READY=1" {
			t.Fatalf("first notification %q, want READY=1", msg)
		}
	case err := <-d.exited:
		t.Fatalf("daemon exited before serving: %v\n%s", err, d.log)
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not report READY=1 within 20s\n%s", d.log)
	}
	// READY=1 promises a socket that serves: no polling here.
	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatalf("daemon reported ready, but its socket does not answer: %v", err)
	}
	c.Close()
	return d
}

// listenNotify opens the datagram socket the daemon notifies, as systemd
// does for Type=notify services, and forwards each message to d.notified.
func (d *daemon) listenNotify(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	os.Remove(path) // left by a daemon started earlier in dir
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			d.notified <- string(buf[:n])
		}
	}()
	return path
}

// client returns containerd's own proxy snapshotter, as containerd uses it.
func (d *daemon) client(t testing.TB) snapshots.Snapshotter {
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "ociseek")
}

// stop sends sig and waits for a clean exit.
func (d *daemon) stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("daemon exit after %v: %v\n%s", sig, err, d.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon still running 30s after %v", sig)
	}
}

func (d *daemon) scrape(t *testing.T) string {
	_, body := d.get(t, "/metrics")
	return body
}

// get fetches path from the daemon's metrics listener.
func (d *daemon) get(t *testing.T, path string) (status int, body string) {
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.metrics)
	}}}
	resp, err := hc.Get("http://metrics" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonPprof checks that Go's profiles are served on the metrics
// address only when [metrics] pprof is set.
func TestDaemonPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		dir := t.TempDir()
		d := startDaemon(t, dir, func(c *exec.Cmd) {
			if !on {
				return
			}
			// startDaemon's config ends with the [metrics] table.
			f, err := os.OpenFile(filepath.Join(dir, "config.toml"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("pprof = true\n"); err != nil {
				t.Fatal(err)
			}
		})
		status, body := d.get(t, "/debug/pprof/heap?debug=1")
		switch {
		case on && (status != http.StatusOK || !strings.Contains(body, "heap profile")):
			t.Errorf("pprof on: GET /debug/pprof/heap = %d, %.80q; want 200 and a heap profile", status, body)
		case !on && status != http.StatusNotFound:
			t.Errorf("pprof off: GET /debug/pprof/heap = %d, want 404", status)
		}
		d.stop(t, syscall.SIGINT)
	}
}

func TestDaemonServesSnapshotsAPI(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	ctx := context.Background()
	sn := d.client(t)

	if st, err := os.Stat(d.socket); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, %v; want 0660", st.Mode().Perm(), err)
	}

	mounts, err := sn.Prepare(ctx, "base-active", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("mounts of a first layer = %+v", mounts)
	}
	os.WriteFile(filepath.Join(mounts[0].Source, "hello"), []byte("hi"), 0o644)
	if err := sn.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}

	// An unpack Prepare without image labels (containerd running without
	// snapshot annotations): the lazy file system cannot tell which image
	// it is, so the layer goes the overlay way and containerd pulls it.
	labels := map[string]string{snapshots.LabelSnapshotRef: "layer-2"}
	mounts, err = sn.Prepare(ctx, "extract-1 layer-2", "base", snapshots.WithLabels(labels))
	if err != nil {
		t.Fatalf("unpack Prepare = %v, want overlay mounts", err)
	}
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		t.Fatalf("unpack mounts = %+v", mounts)
	}
	info, err := sn.Stat(ctx, "extract-1 layer-2")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels[snapshot.LabelDecision] != "overlay" || info.Labels[snapshot.LabelDecisionReason] != "no-index" {
		t.Errorf("decision labels = %v", info.Labels)
	}
	again, err := sn.Mounts(ctx, "extract-1 layer-2")
	if err != nil || !reflect.DeepEqual(again, mounts) {
		t.Errorf("Mounts = %+v, %v; want %+v", again, err, mounts)
	}
	if _, err := sn.Prepare(ctx, "x", "no-such-parent"); !errdefs.IsNotFound(err) {
		t.Errorf("Prepare on a missing parent = %v, want NotFound over gRPC", err)
	}
	if m := d.scrape(t); !strings.Contains(m, `ociseek_snapshot_layer_decisions_total{outcome="overlay",reason="no-index"} 1`) {
		t.Errorf("metrics lack the decision:\n%s", m)
	}

	d.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
	select {
	case msg := <-d.notified:
		if msg != "STOPPING=1" {
			t.Errorf("notification on stop %q, want STOPPING=1", msg)
		}
	case <-time.After(5 * time.Second): // sent before exit; only the forwarding goroutine may lag
		t.Error("daemon did not notify STOPPING=1")
	}

	// State survives a restart.
	d2 := startDaemon(t, dir)
	sn2 := d2.client(t)
	if info, err := sn2.Stat(ctx, "base"); err != nil || info.Kind != snapshots.KindCommitted {
		t.Errorf("after restart Stat(base) = %+v, %v", info, err)
	}
	if mounts, err := sn2.View(ctx, "view", "base"); err != nil || len(mounts) != 1 {
		t.Errorf("View after restart = %+v, %v", mounts, err)
	} else {
		checkFile(t, mounts, "hello", "hi")
	}
	d2.stop(t, syscall.SIGINT)
}

func checkFile(t *testing.T, mounts []mount.Mount, name, want string) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", name, b, err, want)
	}
}

func TestDaemonRejectsUnknownConfigKey(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	os.WriteFile(cfgPath, []byte("[fuse]\nmount_timout = \"1s\"\n"), 0o600)
	out, err := exec.Command(daemonBin, "--config", cfgPath, "--root", filepath.Join(dir, "root")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mount_timout") {
		t.Errorf("daemon with a misspelt key: %v\n%s", err, out)
	}
}

func TestConfigDefaultCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config", "default"}, &out); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(&out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("`config default` does not print the defaults")
	}
}

func TestConfigDumpAppliesFlags(t *testing.T) {
	var out bytes.Buffer
	args := []string{"--config", filepath.Join(t.TempDir(), "absent.toml"), "config", "dump"}
	if err := run(context.Background(), args, &out); err == nil {
		t.Error("an explicit --config that does not exist was accepted")
	}
	out.Reset()
	args = []string{"--root", "/srv/ociseek", "--config", "/dev/null", "config", "dump"}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "root = '/srv/ociseek'") {
		t.Errorf("dump ignores --root:\n%s", out.String())
	}
}

// TestHelpExplainsSignals: --help is where an operator learns which signal
// keeps the lazy mounts and which removes them.
func TestHelpExplainsSignals(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out); err != nil {
		t.Fatalf("--help = %v, want no error", err)
	}
	for _, want := range []string{"SIGTERM", "leaving lazy layers mounted", "SIGINT", "unmount every lazy layer", "-config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}
