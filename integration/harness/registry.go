package harness

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Registry is an olareg registry process with the OCI referrers API, for
// programs that are not tests (the demo). Tests use package regtest, which
// also covers registries without the referrers API.
type Registry struct {
	*Process
	// Host is "127.0.0.1:<port>".
	Host string
	// Dir holds the registry's storage and log.
	Dir string
}

// registryAttempts bounds the retries of a start that lost its free port
// to another process between FreePort and olareg's bind.
const registryAttempts = 3

// StartRegistryIn starts olareg (the binary bin, from tools/olareg) on a
// free port of 127.0.0.1 with its storage under dir, and waits until /v2/
// answers. s.Defer holds its stop (by PID).
func StartRegistryIn(s Scope, bin, dir string) (*Registry, error) {
	if err := mkdirs(dir); err != nil {
		return nil, fmt.Errorf("registry dir: %w", err)
	}
	var errs []error
	for attempt := 0; attempt < registryAttempts; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, fmt.Errorf("registry port: %w", err)
		}
		r := &Registry{Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
		args := []string{"serve", "--addr", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", filepath.Join(dir, "store"), "--api-referrer=true",
			// No background garbage collection while the demo pushes.
			"--gc-frequency=-1s"}
		p, err := StartProcess("olareg", filepath.Join(dir, "registry.log"), bin, args, nil)
		if err != nil {
			return nil, err
		}
		r.Process = p
		s.Defer(func() {
			if err := p.Stop(syscall.SIGTERM); err != nil {
				s.Logf("stop registry: %v", err)
			}
		})
		err = waitFor(p, startTimeout, func() error { return registryReady(r.Host) })
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
		if err := p.Stop(syscall.SIGTERM); err != nil {
			s.Logf("stop registry: %v", err)
		}
	}
	return nil, fmt.Errorf("start olareg: %w", errors.Join(errs...))
}

// registryReady checks that the registry at host answers GET /v2/ with 200.
func registryReady(host string) error {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + host + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: status %d", resp.StatusCode)
	}
	return nil
}
