package span

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// blobRegistry is what the span tests need of a registry: push a blob and
// name it. memRegistry is the in-process one they use; the benchmarks use
// a real registry (internal/regtest), whose serving costs are part of what
// they measure.
type blobRegistry interface {
	PushBlob(t testing.TB, repo string, data []byte, mediaType string) ocispec.Descriptor
	Ref(repo, tagOrDigest string) string
}

// memRegistry serves pushed blobs from memory through the registry API's
// blob endpoint (GET and HEAD, with Range) on 127.0.0.1: all fs/remote
// asks of a registry, without a registry binary. Stop closes it; Restart
// serves again on the same address, as a registry back from an outage.
type memRegistry struct {
	t     testing.TB
	addr  string
	mu    sync.Mutex
	blobs map[string][]byte // "repo@digest" → bytes
	srv   *http.Server
}

func startMemRegistry(t testing.TB) *memRegistry {
	t.Helper()
	r := &memRegistry{t: t, blobs: map[string][]byte{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.Stop)
	return r
}

func (r *memRegistry) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle), ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// handle answers /v2/ and /v2/<repo>/blobs/<digest>.
func (r *memRegistry) handle(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/v2/" {
		return
	}
	repo, dgst, ok := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/blobs/")
	r.mu.Lock()
	b, found := r.blobs[repo+"@"+dgst]
	r.mu.Unlock()
	if !ok || !found {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", dgst)
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(b))
}

// PushBlob stores data as a blob of repo.
func (r *memRegistry) PushBlob(t testing.TB, repo string, data []byte, mediaType string) ocispec.Descriptor {
	d := digest.FromBytes(data)
	r.mu.Lock()
	r.blobs[repo+"@"+d.String()] = bytes.Clone(data)
	r.mu.Unlock()
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// Ref names repo at a tag or digest on this registry.
func (r *memRegistry) Ref(repo, tagOrDigest string) string {
	if strings.Contains(tagOrDigest, ":") {
		return r.addr + "/" + repo + "@" + tagOrDigest
	}
	return r.addr + "/" + repo + ":" + tagOrDigest
}

// Stop closes the listener and every connection.
func (r *memRegistry) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Shutdown(context.Background())
		_ = srv.Close()
	}
}

// Restart serves again on the same address.
func (r *memRegistry) Restart() {
	r.t.Helper()
	r.Stop()
	var ln net.Listener
	var err error
	for range 50 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", r.addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("restart the registry on %s: %v", r.addr, err)
	}
	r.serve(ln)
}
