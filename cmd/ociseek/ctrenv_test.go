package main

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociseek/ociseek/internal/regtest"
)

// TestContainerdFlagsFromEnv: like ctr, the containerd verbs take the
// socket and namespace from $CONTAINERD_ADDRESS and $CONTAINERD_NAMESPACE,
// and a flag (long or short) on the command line wins over them.
func TestContainerdFlagsFromEnv(t *testing.T) {
	parse := func(args ...string) *containerdFlags {
		t.Helper()
		fs := flag.NewFlagSet("pull", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cf := addContainerdFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		return cf
	}
	t.Setenv("CONTAINERD_ADDRESS", "")
	t.Setenv("CONTAINERD_NAMESPACE", "")
	if cf := parse(); cf.address != "/run/containerd/containerd.sock" || cf.namespace != "default" {
		t.Errorf("without environment: %q %q, want containerd's defaults", cf.address, cf.namespace)
	}
	t.Setenv("CONTAINERD_ADDRESS", "/tmp/env.sock")
	t.Setenv("CONTAINERD_NAMESPACE", "k8s.io")
	if cf := parse(); cf.address != "/tmp/env.sock" || cf.namespace != "k8s.io" {
		t.Errorf("from the environment: %q %q, want /tmp/env.sock k8s.io", cf.address, cf.namespace)
	}
	for _, args := range [][]string{
		{"--address", "/tmp/flag.sock", "--namespace", "mine"},
		{"-a", "/tmp/flag.sock", "-n", "mine"},
	} {
		if cf := parse(args...); cf.address != "/tmp/flag.sock" || cf.namespace != "mine" {
			t.Errorf("%q over the environment: %q %q, want the flags'", args, cf.address, cf.namespace)
		}
	}
}

// TestPullDialsContainerdAddress runs `ociseek pull` with only
// $CONTAINERD_ADDRESS set, as a user who exported it for ctr would: the
// connection must reach the socket it names (a listener of the test that
// speaks no gRPC), not containerd's default socket.
func TestPullDialsContainerdAddress(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- struct{}{}:
			default:
			}
			defer c.Close()
		}
	}()
	t.Setenv("CONTAINERD_ADDRESS", sock)
	t.Setenv("CONTAINERD_NAMESPACE", "from-env")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- dispatch(ctx, "ociseek", []command{pullCommand()}, []string{"pull", "127.0.0.1:1/app:latest"}, io.Discard, io.Discard)
	}()
	select {
	case <-accepted:
	case err := <-done:
		t.Fatalf("pull ended without dialling $CONTAINERD_ADDRESS (%s): %v", sock, err)
	case <-time.After(15 * time.Second):
		t.Fatalf("pull did not dial $CONTAINERD_ADDRESS (%s) within 15 s", sock)
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("pull against a socket that speaks no gRPC succeeded")
	}
}

// TestRegistryTLSFlags: the registry options ctr and nerdctl users know.
// A registry behind HTTPS with a certificate nobody trusts is refused
// unless --skip-verify (-k) or --insecure-registry is given; with
// --insecure-registry a registry that speaks only HTTP is reached after
// HTTPS fails; -u is --user.
func TestRegistryTLSFlags(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := regtest.StartWithAuth(t, "erin", "pw")
	reg.PushImage(t, "tls", [][]byte{testLayer(t, 1)}, nil)
	up, err := url.Parse("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(up))
	t.Cleanup(tlsSrv.Close)
	tlsHost := strings.TrimPrefix(tlsSrv.URL, "https://")
	// Loopback registries get plain HTTP unless told otherwise.
	https := []string{"--plain-http=false", "-u", "erin:pw"}
	ls := func(host string, flags ...string) error {
		args := append(append([]string{"index", "ls"}, append(https, flags...)...), host+"/tls:latest")
		_, _, err := runRegistryCLI(t, args...)
		return err
	}
	if err := ls(tlsHost); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("index ls over HTTPS with an untrusted certificate: %v, want a certificate error", err)
	}
	for _, flags := range [][]string{{"--skip-verify"}, {"-k"}, {"--insecure-registry"}} {
		if err := ls(tlsHost, flags...); err != nil {
			t.Errorf("index ls %v over HTTPS: %v", flags, err)
		}
	}
	if err := ls(reg.Host); err == nil {
		t.Error("index ls over HTTPS to an HTTP-only registry succeeded without --insecure-registry")
	}
	// --insecure-registry alone picks the scheme by asking.
	https = []string{"-u", "erin:pw"}
	if err := ls(reg.Host, "--insecure-registry"); err != nil {
		t.Errorf("index ls --insecure-registry to an HTTP-only registry: %v, want the plain-HTTP fallback", err)
	}
	if err := ls(tlsHost, "--insecure-registry"); err != nil {
		t.Errorf("index ls --insecure-registry to an HTTPS registry on loopback: %v, want HTTPS found by asking", err)
	}
	var plain int
	for _, r := range reg.Requests(t) {
		if r.Status == http.StatusOK {
			plain++
		}
	}
	if plain == 0 {
		t.Error("the registry served nothing")
	}
}
