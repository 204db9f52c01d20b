// Package regtest starts real OCI registries on 127.0.0.1 for tests and
// pushes test content into them. It is imported only by _test.go files.
//
// Three kinds of registry are modelled, so that every discovery and push test
// runs against a registry with the referrers API and against registries
// without it (where clients maintain the sha256-<hex> fallback tag):
//   - KindDistribution: distribution/distribution v3 (no referrers API);
//   - KindOlareg: olareg with the referrers API;
//   - KindOlaregNoReferrers: olareg started with --api-referrer=false.
//
// StartWithAuth starts a distribution registry that demands a user and
// password (htpasswd), for the credential paths: --user, docker config
// files (WriteDockerConfig), and what clients send when refused
// (Requests).
//
// The binaries come from the pinned tool modules under tools/: `make tools`
// builds them into $OCISEEK_TOOLS_BIN (default bin/tools), and package
// toolbin builds a missing one on first use; when that is impossible the
// test is skipped with a how-to. Each registry gets a private storage
// directory and a free port, and is stopped by PID when the test ends.
//
// Hazards: a Registry is not safe for concurrent Stop/Restart calls; the
// push helpers are safe to call from parallel subtests.
package regtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/ociseek/ociseek/internal/toolbin"
)

// Kind names one registry implementation and configuration.
type Kind string

// The registry kinds tests run against.
const (
	// KindDistribution is distribution v3.1.2: no referrers API.
	KindDistribution Kind = "distribution"
	// KindOlareg is olareg v0.1.2 with the referrers API enabled.
	KindOlareg Kind = "olareg"
	// KindOlaregNoReferrers is olareg v0.1.2 with the referrers API off.
	KindOlaregNoReferrers Kind = "olareg-noreferrers"
)

// EnvToolsBin names the directory holding the registry binaries.
const EnvToolsBin = toolbin.EnvDir

// startTimeout bounds how long a registry may take to answer /v2/.
const startTimeout = 20 * time.Second

// stopTimeout bounds how long a registry may take to exit after SIGTERM
// before it is killed.
const stopTimeout = 5 * time.Second

// Kinds returns every registry kind, in a fixed order.
func Kinds() []Kind {
	return []Kind{KindDistribution, KindOlareg, KindOlaregNoReferrers}
}

// HasReferrersAPI reports whether the kind serves the referrers API.
func (k Kind) HasReferrersAPI() bool { return k == KindOlareg }

// Registry is one running registry process.
type Registry struct {
	// Kind is the implementation and configuration.
	Kind Kind
	// Host is "127.0.0.1:<port>", the same across Restart.
	Host string
	// Dir is the private storage directory, kept across Restart.
	Dir string
	// User and Password are the credentials the registry demands
	// (StartWithAuth); both are empty when it demands none.
	User, Password string

	t     testing.TB
	bin   string
	token *TokenServer // the token server, for StartWithTokenAuth
	port  int
	cmd   *exec.Cmd
	done  chan struct{} // closed when cmd has been waited for
}

// PID returns the registry process's ID (benchmarks read its CPU time from
// /proc), or 0 when it is not running.
func (r *Registry) PID() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Start starts a registry of the given kind and registers its stop with
// t.Cleanup. It builds the registry binary if it is missing, skips the test
// if it cannot be built, and fails it if the registry does not come up.
func Start(t testing.TB, kind Kind) *Registry {
	t.Helper()
	return startRegistry(t, kind, "", "")
}

// startRegistry starts a registry of kind, demanding user and password
// when user is not empty.
func startRegistry(t testing.TB, kind Kind, user, password string) *Registry {
	t.Helper()
	bin := registryBinary(t, kind)
	r := &Registry{Kind: kind, Dir: t.TempDir(), User: user, Password: password, t: t, bin: bin}
	r.launch(t)
	return r
}

// registryBinary returns the path of the binary serving kind, built if
// missing (the test is skipped when it cannot be).
func registryBinary(t testing.TB, kind Kind) string {
	t.Helper()
	return toolbin.Path(t, binaryName(kind))
}

// launch starts r on a free port and registers its stop with t.Cleanup.
func (r *Registry) launch(t testing.TB) {
	t.Helper()
	var lastErr error
	// A free port found by listening can be taken by someone else before the
	// registry binds it; try a few times rather than flake.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		r.port = port
		r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.Stop)
			return
		}
	}
	t.Fatalf("start %s registry: %v", r.Kind, lastErr)
}

// binaryName is the name of the tool binary that serves kind.
func binaryName(kind Kind) string {
	if kind == KindDistribution {
		return "registry"
	}
	return "olareg"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// args returns the command line (after the binary) for r.
func (r *Registry) args() ([]string, error) {
	switch r.Kind {
	case KindDistribution:
		cfg := filepath.Join(r.Dir, "config.yml")
		text, err := r.distributionConfig()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("write distribution config: %w", err)
		}
		return []string{"serve", cfg}, nil
	case KindOlareg, KindOlaregNoReferrers:
		return []string{"serve",
			"--addr", "127.0.0.1", "--port", strconv.Itoa(r.port),
			"--dir", filepath.Join(r.Dir, "store"),
			"--api-delete=true", "--api-blob-delete=true",
			"--api-referrer=" + strconv.FormatBool(r.Kind == KindOlareg),
			// No background GC: tests own what exists and when.
			"--gc-frequency=-1s",
		}, nil
	}
	return nil, fmt.Errorf("unknown registry kind %q", r.Kind)
}

// distributionConfig enables deletes so index removal and fallback-tag
// rewrites work, and silences logs and tracing. With credentials it adds
// htpasswd auth and turns the access log on (Requests reads it).
func (r *Registry) distributionConfig() (string, error) {
	authSection := ""
	var err error
	switch {
	case r.token != nil:
		authSection, err = r.tokenConfig()
	case r.User != "":
		authSection, err = r.htpasswdConfig()
	}
	if err != nil {
		return "", err
	}
	return baseDistributionConfig(r.Dir, r.Host, r.User == "") + authSection, nil
}

func baseDistributionConfig(dir, addr string, noAccessLog bool) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: %t
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, noAccessLog, filepath.Join(dir, "store"), addr)
}

// start launches the process and waits until /v2/ answers.
func (r *Registry) start() error {
	args, err := r.args()
	if err != nil {
		return err
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	logf, err := os.Create(filepath.Join(r.Dir, "registry.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", r.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	r.cmd, r.done = cmd, done
	if err := r.waitReady(); err != nil {
		r.Stop()
		log, _ := os.ReadFile(filepath.Join(r.Dir, "registry.log"))
		return fmt.Errorf("%w; registry log:\n%s", err, log)
	}
	return nil
}

func (r *Registry) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-r.done:
			return errors.New("registry exited during start")
		default:
		}
		req, err := http.NewRequest(http.MethodGet, "http://"+r.Host+"/v2/", nil)
		if err != nil {
			return err
		}
		if r.User != "" {
			req.SetBasicAuth(r.User, r.Password)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			// A token-auth registry challenges even /v2/: its challenge
			// is the sign that it serves.
			if r.token != nil && resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry at %s not ready after %v: %w", r.Host, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the registry (SIGTERM, SIGKILL after a bound) and waits for it
// to exit. Stopping a stopped registry does nothing.
func (r *Registry) Stop() {
	if r.cmd == nil {
		return
	}
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(stopTimeout):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
	r.cmd = nil
}

// Restart stops the registry and starts it again on the same port with the
// same storage, for tests of registry outages.
func (r *Registry) Restart() {
	r.t.Helper()
	r.Stop()
	var err error
	// The old socket may linger briefly; retry the bind within a bound.
	for attempt := 0; attempt < 5; attempt++ {
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Fatalf("restart %s registry at %s: %v", r.Kind, r.Host, err)
}

// RestartAs restarts an olareg registry as another olareg kind on the same
// port and storage: content pushed while the referrers API was off is then
// served by a registry with the API on (or the reverse), as after a
// registry upgrade that does not back-fill the referrers index.
func (r *Registry) RestartAs(kind Kind) {
	r.t.Helper()
	if r.Kind == KindDistribution || kind == KindDistribution {
		r.t.Fatalf("RestartAs: only olareg kinds share storage, not %s -> %s", r.Kind, kind)
	}
	r.Stop()
	r.Kind = kind
	r.Restart()
}

// Ref returns "<host>/<repo>:<tag>" or "<host>/<repo>@<digest>".
func (r *Registry) Ref(repo, tagOrDigest string) string {
	sep := ":"
	if isDigest(tagOrDigest) {
		sep = "@"
	}
	if tagOrDigest == "" {
		return r.Host + "/" + repo
	}
	return r.Host + "/" + repo + sep + tagOrDigest
}

func isDigest(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

// Repository returns a plain-HTTP oras client for repo on r, with r's
// credentials when it demands some. Each call returns a fresh client, so
// referrers capability is learned anew.
func (r *Registry) Repository(t testing.TB, repo string) *orasremote.Repository {
	t.Helper()
	repository, err := orasremote.NewRepository(r.Host + "/" + repo)
	if err != nil {
		t.Fatalf("repository %s/%s: %v", r.Host, repo, err)
	}
	repository.PlainHTTP = true
	if r.User != "" {
		repository.Client = r.authClient()
	}
	return repository
}

// ctx returns a context bounded so a hung registry fails the test instead
// of hanging it.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
