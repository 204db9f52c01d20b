package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ociseek/ociseek/config"
	"github.com/ociseek/ociseek/fs"
	"github.com/ociseek/ociseek/fs/remote"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// fetchConfig is the default configuration with fast retries and an empty
// credentials file.
func fetchConfig(t *testing.T, maxRetries int) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Registry.DockerConfig = filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg.Registry.DockerConfig, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Fetch.MaxRetries = maxRetries
	cfg.Fetch.MinRetryWait = config.Dur(time.Millisecond)
	cfg.Fetch.MaxRetryWait = config.Dur(10 * time.Millisecond)
	return cfg
}

// TestBlobReadsRetryOnce: against an always-503 registry, opening a lazy
// layer's blob sends exactly 1 + fetch.max_retries requests. The daemon's
// retry transport used to retry each of them again (12 requests over 14 s
// for max_retries = 1).
func TestBlobReadsRetryOnce(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, m := range []int{0, 1, 3} {
		cfg := fetchConfig(t, m)
		client, err := newAuthClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Registry.PlainHTTP = []string{host}
		blobs := lazyOptions(cfg, withHosts(cfg, client)).Blobs()
		requests.Store(0)
		_, err = blobs.OpenBlob(context.Background(), fs.LayerRef{ImageRef: host + "/app:1", LayerDigest: digest.FromString("layer")})
		if !errors.Is(err, remote.ErrStatus) {
			t.Fatalf("max_retries = %d: open: %v", m, err)
		}
		if n := requests.Load(); n != int64(1+m) {
			t.Fatalf("max_retries = %d: %d requests, want %d", m, n, 1+m)
		}
	}
}

// TestSharedClientRefusesDowngrade: the client discovery and unpack use
// does not follow a redirect from HTTPS to plain HTTP either.
func TestSharedClientRefusesDowngrade(t *testing.T) {
	var plain atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { plain.Add(1) }))
	defer target.Close()
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/blob?sig=secret", http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	client, err := newAuthClient(fetchConfig(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	// Trust the test certificate.
	base := client.Client.Transport.(*retry.Transport).Base.(*http.Transport)
	base.TLSClientConfig = reg.Client().Transport.(*http.Transport).TLSClientConfig
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/app/manifests/1", nil)
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, remote.ErrInsecureRedirect) || plain.Load() != 0 {
		t.Fatalf("redirect to plain HTTP: %v (%d plain requests)", err, plain.Load())
	}
}
