package regtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// StartWithAuth starts a distribution registry (KindDistribution) that
// demands user and password (htpasswd, HTTP basic auth) on every request,
// /v2/ included. Repository and the push helpers send the credentials;
// code under test has to find them itself (--user, a docker config file:
// see WriteDockerConfig). The access log is on, so Requests can count
// what clients sent.
func StartWithAuth(t testing.TB, user, password string) *Registry {
	t.Helper()
	if user == "" || strings.Contains(user, ":") {
		t.Fatalf("StartWithAuth: user %q must be non-empty and without ':'", user)
	}
	return startRegistry(t, KindDistribution, user, password)
}

// htpasswdConfig writes the htpasswd file (bcrypt, the only hash
// distribution accepts) and returns the config section that points at it.
func (r *Registry) htpasswdConfig() (string, error) {
	// The lowest cost bcrypt allows: tests hash once per start, and the
	// registry checks the hash on every request.
	hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("hash registry password: %w", err)
	}
	path := filepath.Join(r.Dir, "htpasswd")
	if err := os.WriteFile(path, []byte(r.User+":"+string(hash)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write htpasswd: %w", err)
	}
	return fmt.Sprintf(`auth:
  htpasswd:
    realm: regtest
    path: %s
`, path), nil
}

// authClient is an oras client that answers r's challenges with r's
// credentials.
func (r *Registry) authClient() *auth.Client {
	cred := auth.Credential{Username: r.User, Password: r.Password}
	return &auth.Client{
		Client:     retry.DefaultClient,
		Cache:      auth.NewCache(),
		Credential: func(context.Context, string) (auth.Credential, error) { return cred, nil },
	}
}

// WriteDockerConfig writes dir/config.json, a docker config file whose
// "auths" entry for r.Host holds user:password (base64, as docker login
// writes it), and returns dir: the value for $DOCKER_CONFIG. dir is
// created if missing.
func (r *Registry) WriteDockerConfig(t testing.TB, dir, user, password string) string {
	t.Helper()
	cfg := map[string]any{"auths": map[string]any{
		r.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("create docker config dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatalf("write docker config: %v", err)
	}
	return dir
}

// Request is one request a registry served, as its access log tells it.
type Request struct {
	// Method is the HTTP method, e.g. "GET".
	Method string
	// Path is the request URI, e.g. "/v2/app/manifests/latest".
	Path string
	// Status is the response status code.
	Status int
}

// accessLine matches the request and status of a combined-log-format line.
var accessLine = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) `)

// Requests returns the requests the registry has served since it last
// started, oldest first, including those it refused (401). Only
// registries from StartWithAuth keep an access log; for others it fails
// the test.
func (r *Registry) Requests(t testing.TB) []Request {
	t.Helper()
	if r.User == "" {
		t.Fatal("Requests: only registries from StartWithAuth log requests")
	}
	b, err := os.ReadFile(filepath.Join(r.Dir, "registry.log"))
	if err != nil {
		t.Fatalf("read registry log: %v", err)
	}
	var reqs []Request
	for _, line := range strings.Split(string(b), "\n") {
		m := accessLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[3])
		reqs = append(reqs, Request{Method: m[1], Path: m[2], Status: status})
	}
	return reqs
}
