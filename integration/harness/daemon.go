package harness

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DaemonOptions are the daemon settings tests vary.
type DaemonOptions struct {
	// BackgroundFetch turns on background completion of lazy layers. Off by
	// default, so the bytes a registry serves are only those reads asked
	// for.
	BackgroundFetch bool
	// DisableLocalUnpack makes unindexed layers of indexed images go the
	// overlay way instead of being unpacked by the daemon.
	DisableLocalUnpack bool
	// Extra is appended to the generated configuration file verbatim.
	Extra string
}

// Daemon is an ociseek-snapshotter process with a private root and socket.
type Daemon struct {
	*Process
	// Dir holds the configuration, root and socket.
	Dir string
	// Root is the daemon's state directory.
	Root string
	// Address is the gRPC socket containerd connects to.
	Address string
	// MetricsAddr is the host:port of the /metrics endpoint.
	MetricsAddr string
	// Config is the configuration file.
	Config string

	bin string
}

// StartDaemon writes a configuration under dir, starts the daemon and waits
// until its socket accepts connections. t.Cleanup stops it with SIGINT (the
// daemon then unmounts its layers) and unmounts anything left under dir. It
// is StartDaemonIn with t's scope, failing t on error.
func StartDaemon(t T, tools Tools, dir string, opts DaemonOptions) *Daemon {
	t.Helper()
	d, err := StartDaemonIn(ScopeOf(t), tools, dir, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return d
}

// StartDaemonIn writes a configuration under dir, starts the daemon and
// waits until its socket accepts connections. s.Defer holds its stop with
// SIGINT (the daemon then unmounts its layers) and the unmount of anything
// left under dir, also when StartDaemonIn then returns an error.
func StartDaemonIn(s Scope, tools Tools, dir string, opts DaemonOptions) (*Daemon, error) {
	port, err := FreePort()
	if err != nil {
		return nil, fmt.Errorf("daemon metrics port: %w", err)
	}
	d := &Daemon{
		Dir:         dir,
		Root:        filepath.Join(dir, "root"),
		Address:     filepath.Join(dir, "ociseek.sock"),
		MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Config:      filepath.Join(dir, "config.toml"),
		bin:         tools.Snapshotter,
	}
	if err := mkdirs(d.Root); err != nil {
		return nil, fmt.Errorf("daemon dirs: %w", err)
	}
	if err := os.WriteFile(d.Config, []byte(d.config(opts)), 0o600); err != nil {
		return nil, fmt.Errorf("write daemon config: %w", err)
	}
	s.Defer(func() { d.stop(s) })
	if err := d.start(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Daemon) config(opts DaemonOptions) string {
	return fmt.Sprintf(`[daemon]
root = %q
address = %q
log_level = "debug"

[snapshotter]
local_unpack = %t

[background_fetch]
enable = %t

[metrics]
address = %q
%s
`, d.Root, d.Address, !opts.DisableLocalUnpack, opts.BackgroundFetch, d.MetricsAddr, opts.Extra)
}

// start launches the process and waits for its socket.
func (d *Daemon) start() error {
	_ = os.Remove(d.Address) // a SIGKILLed daemon leaves its socket file
	p, err := StartProcess("ociseek-snapshotter", filepath.Join(d.Dir, "daemon.log"), d.bin,
		[]string{"--config", d.Config}, nil)
	if err != nil {
		return err
	}
	d.Process = p
	return waitFor(p, startTimeout, func() error { return dialUnix(d.Address) })
}

// Restart starts the daemon again with the same configuration and state,
// after it was stopped or killed.
func (d *Daemon) Restart(t T) {
	t.Helper()
	if !d.Exited() {
		t.Fatalf("restart: daemon (pid %d) is still running", d.PID())
	}
	if err := d.start(); err != nil {
		t.Fatalf("restart daemon: %v", err)
	}
}

// RestartWith is Restart with another binary: an upgrade in place.
func (d *Daemon) RestartWith(t T, bin string) {
	t.Helper()
	d.bin = bin
	d.Restart(t)
}

// Kill kills the daemon with SIGKILL, as a crash would, and waits for it.
func (d *Daemon) Kill(t T) {
	t.Helper()
	if err := d.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill daemon: %v", err)
	}
}

// stop stops the daemon with SIGINT (unmount everything, then exit) and
// removes any mount left under its directory.
func (d *Daemon) stop(s Scope) {
	if d.Process != nil {
		if err := d.Stop(syscall.SIGINT); err != nil {
			s.Logf("stop daemon: %v", err)
		}
		if s.Failed() {
			s.Logf("daemon log %s (tail):\n%s", d.Log, d.Tail(6000))
		}
	}
	if err := UnmountAll(d.Dir); err != nil {
		s.Logf("unmount daemon leftovers: %v", err)
	}
}

// Metric returns the sum of the samples of the named metric (all label
// sets) from the daemon's /metrics endpoint, and 0 when it is absent.
func (d *Daemon) Metric(name string) (float64, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + d.MetricsAddr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("read daemon metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("read daemon metrics: %w", err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue // a longer name with this prefix
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
