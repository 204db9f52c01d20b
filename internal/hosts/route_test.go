package hosts

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// TestCapabilityFor: each registry API call needs the capability
// containerd's resolver asks of a host for it.
func TestCapabilityFor(t *testing.T) {
	pull, resolve := docker.HostCapabilityPull, docker.HostCapabilityResolve
	for _, c := range []struct {
		method, path string
		want         docker.HostCapabilities
	}{
		{http.MethodGet, "/v2/a/b/blobs/sha256:ab", pull},
		{http.MethodHead, "/v2/a/manifests/sha256:ab", pull},
		{http.MethodGet, "/v2/a/manifests/latest", pull | resolve},
		{http.MethodGet, "/v2/blobs/manifests/v1", pull | resolve}, // a repository named "blobs"
		{http.MethodGet, "/v2/a/referrers/sha256:ab", docker.HostCapabilityReferrers},
		{http.MethodGet, "/v2/a/tags/list", resolve},
		{http.MethodPost, "/v2/a/blobs/uploads/", docker.HostCapabilityPush},
		{http.MethodPut, "/v2/a/manifests/latest", docker.HostCapabilityPush},
		{http.MethodGet, "/v2/a/blobs/uploads/123", docker.HostCapabilityPush},
		{http.MethodGet, "/v2/", 0},
		{http.MethodGet, "/v2/_catalog", 0},
	} {
		if got, _ := capabilityFor(c.method, c.path); got != c.want {
			t.Errorf("%s %s: capability %b, want %b", c.method, c.path, got, c.want)
		}
	}
}

// TestDockerHubName: Docker Hub's API host is configured under
// "docker.io", and is no mirror of itself (no ns parameter).
func TestDockerHubName(t *testing.T) {
	dir := t.TempDir()
	h := New(Options{Dir: dir})
	if err := writeFile(HostDir(dir, "docker.io")+"/hosts.toml", `server = "https://registry-1.docker.io"
[host."https://mirror.example"]
  capabilities = ["pull"]
`); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "https://registry-1.docker.io/v2/library/alpine/blobs/sha256:ab", nil)
	eps, err := h.lookup(req.Context(), registryName(req.URL.Host), "https")
	if err != nil || len(eps) != 2 {
		t.Fatalf("lookup: %d hosts, %v", len(eps), err)
	}
	mirror, err := rewrite(req, "docker.io", eps[0], false)
	if err != nil || mirror.URL.String() != "https://mirror.example/v2/library/alpine/blobs/sha256:ab?ns=docker.io" {
		t.Errorf("mirror request %v, %v", mirror.URL, err)
	}
	server, err := rewrite(req, "docker.io", eps[1], true)
	if err != nil || server.URL.String() != req.URL.String() {
		t.Errorf("server request %v, %v", server.URL, err)
	}
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
