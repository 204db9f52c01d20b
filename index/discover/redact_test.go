package discover

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ociseek/ociseek/index"
)

// TestSignedURLNotInErrors: a registry redirects the zTOC blob to storage
// with a pre-signed URL, and the storage drops the connection. The error
// must say what failed without the URL's query, which is a credential.
func TestSignedURLNotInErrors(t *testing.T) {
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(storage.Close)
	f, _, _, _ := newFake(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, storage.URL+"/bucket/blob?X-Amz-Credential=AKIA&X-Amz-Signature=topsecret", http.StatusTemporaryRedirect)
			return
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	d, _ := newDiscoverer(Options{})
	desc := ocispec.Descriptor{MediaType: index.MediaTypeZtoc, Digest: digest.FromString("a zTOC"), Size: 6}
	_, _, err := d.FetchZtoc(ctxT(t), hostOfServer(srv)+"/app:latest", desc)
	if err == nil {
		t.Fatal("FetchZtoc succeeded against storage that drops the connection")
	}
	if msg := err.Error(); strings.Contains(msg, "topsecret") || strings.Contains(msg, "AKIA") {
		t.Errorf("error shows the pre-signed query: %s", msg)
	}
}
